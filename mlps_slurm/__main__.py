from mlps_slurm.cli.main import main

if __name__ == "__main__":
    main(prog_name="mlps-slurm")
