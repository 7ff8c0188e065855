"""Benchmarks own profile sections (<benchmark>.*) through their profile.py; the shared schema merges them."""

import os

import pytest

from mlps_slurm import benchmarks
from mlps_slurm.benchmarks.base import Benchmark
from mlps_slurm.profile.loader import PATH_KEYS, ProfileError, load_profile
from mlps_slurm.profile.schema import SCHEMA, commented_template


def test_vectordb_section_is_in_the_schema_with_its_defaults():
    assert SCHEMA["vectordb.milvus.mode"].default == "embedded"
    assert tuple(SCHEMA["vectordb.milvus.mode"].choices) == ("embedded", "external")
    # every key of the section came from the benchmark, none from the shared table
    owned = benchmarks.get("vectordb").profile_fields()
    assert set(owned) == {k for k in SCHEMA if k.startswith("vectordb.")}


def test_path_keys_come_from_the_schema_and_are_expanded(monkeypatch):
    assert "vectordb.milvus.data_dir" in PATH_KEYS and "storage.results_dir" in PATH_KEYS
    monkeypatch.setenv("HOME", "/home/someone")
    profile = load_profile("localhost", ["vectordb.milvus.data_dir=~/vdb"])
    assert profile.get("vectordb.milvus.data_dir") == "/home/someone/vdb"
    assert profile.get("vectordb.milvus.token_file") is None  # a nullable path stays null


def test_a_bad_value_in_a_benchmark_section_names_the_key():
    with pytest.raises(ProfileError) as err:
        load_profile("localhost", ["vectordb.milvus.mode=docker"])
    assert "vectordb.milvus.mode" in str(err.value) and "embedded" in str(err.value)


def test_a_benchmark_cannot_declare_keys_outside_its_section(monkeypatch):
    bench = Benchmark(name="vectordb", package="mlps_slurm.benchmarks.vectordb", summary="", tree_name="x",
                      runnable=False)
    module = bench.part("profile")
    monkeypatch.setattr(module, "FIELDS", {**module.FIELDS, "storage.other": SCHEMA["storage.data_dir"]})
    with pytest.raises(ValueError, match="storage.other"):
        bench.profile_fields()


def test_profiles_init_lists_the_section_once():
    text = commented_template("site")
    assert text.count("\nvectordb:") == 1 and text.count("  milvus:") == 1
    assert os.linesep in text
