"""Llama 3 checkpoint workloads of MLPerf Storage v3.0 and their per-rank shard sizes.

The architecture and parallelism come from the MLPerf Storage rules (Table 2). Sizes are derived from the
architecture, not copied: parameters are counted for a Llama 3 decoder with grouped-query attention, the model
state is stored in fp16 (2 bytes per parameter) and the optimizer state in fp32 master weights plus Adam's two
moments (3 x 4 = 12 bytes per parameter), as in the reference DLIO workloads.

Sharding follows DeepSpeed, as the benchmark emulates it:
- ZeRO-3 (llama3-8b, llama3-70b): model and optimizer state are both partitioned over all ranks.
- ZeRO-1 (llama3-405b, llama3-1t): optimizer state is partitioned over all ranks; the model state is split over the
  TP x PP ranks of the first data-parallel replica, which alone writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30
MODEL_BYTES_PER_PARAM = 2  # fp16
OPTIMIZER_BYTES_PER_PARAM = 12  # fp32 master weights + Adam first and second moments
LLAMA3_VOCAB_SIZE = 128256

# MLPerf Storage protocol defaults (Rules.md §4; the reference llama3 workload files).
DEFAULT_NUM_CHECKPOINTS_WRITE = 10
DEFAULT_NUM_CHECKPOINTS_READ = 10
DEFAULT_SECONDS_BETWEEN_CHECKPOINTS = 5.0
# A split write/read submission must start the read invocation within this many seconds (Rules.md §4.7.1).
MAX_WRITE_READ_GAP_SECONDS = 30.0


@dataclass(frozen=True)
class LlamaCheckpointModel:
    """One MLPerf Storage checkpointing workload."""

    name: str
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    tensor_parallel: int
    pipeline_parallel: int
    closed_processes: int
    zero_stage: int
    vocab_size: int = LLAMA3_VOCAB_SIZE

    @property
    def model_parallel(self) -> int:
        """Ranks in one data-parallel replica (TP x PP); OPEN process counts are multiples of it."""
        return self.tensor_parallel * self.pipeline_parallel

    def parameter_count(self) -> int:
        h = self.hidden_size
        head_dim = h / self.num_attention_heads
        kv_dim = round(self.num_kv_heads * head_dim)
        attention = 2 * h * h + 2 * h * kv_dim  # q and o projections are h x h; k and v are h x kv_dim
        mlp = 3 * h * self.ffn_hidden_size  # gated MLP: gate, up and down projections
        norms = 2 * h  # input and post-attention RMSNorm weights
        embeddings = 2 * self.vocab_size * h  # token embedding and untied LM head
        return self.num_layers * (attention + mlp + norms) + embeddings + h  # + final norm

    def model_bytes(self) -> int:
        return self.parameter_count() * MODEL_BYTES_PER_PARAM

    def optimizer_bytes(self) -> int:
        return self.parameter_count() * OPTIMIZER_BYTES_PER_PARAM

    def checkpoint_bytes(self) -> int:
        return self.model_bytes() + self.optimizer_bytes()


LLAMA3_MODELS: dict[str, LlamaCheckpointModel] = {
    m.name: m
    for m in (
        LlamaCheckpointModel("llama3-8b", 32, 4096, 14336, 32, 8, 1, 1, 8, 3),
        LlamaCheckpointModel("llama3-70b", 80, 8192, 28672, 128, 8, 8, 1, 64, 3),
        LlamaCheckpointModel("llama3-405b", 126, 16384, 53248, 128, 8, 8, 32, 512, 1),
        LlamaCheckpointModel("llama3-1t", 128, 25872, 98304, 192, 32, 8, 64, 1024, 1),
    )
}

# Simulated accelerator memory in GB (Rules.md Table 3); rule 4.3.4 needs np x memory >= checkpoint size.
ACCELERATOR_MEMORY_GB: dict[str, int] = {"b200": 180, "mi355": 288, "h100": 80, "a100": 80}


@dataclass(frozen=True)
class RankShard:
    """Bytes one rank writes (and later reads back) for one checkpoint."""

    rank: int
    model_bytes: int
    optimizer_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.optimizer_bytes


def _split(total: int, parts: int) -> list[int]:
    """Split total into parts whose sizes differ by at most one byte and add up exactly."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def process_count_problem(model: LlamaCheckpointModel, num_processes: int) -> str | None:
    """Why num_processes cannot shard this model, or None when it can."""
    if num_processes < 1:
        return f"the process count must be positive, got {num_processes}"
    if model.zero_stage < 3 and num_processes % model.model_parallel:
        return (
            f"{model.name} uses ZeRO-{model.zero_stage} with TP x PP = {model.model_parallel}; the process count "
            f"must be a multiple of {model.model_parallel}, got {num_processes}"
        )
    return None


def rank_shards(model: LlamaCheckpointModel, num_processes: int, scale: float = 1.0) -> list[RankShard]:
    """Per-rank shard sizes of one checkpoint of `model` written by `num_processes` ranks.

    `scale` shrinks the whole checkpoint (for demos and tests) before it is split, so the shards of a scaled run
    still add up to exactly round(scale x checkpoint size).
    """
    problem = process_count_problem(model, num_processes)
    if problem:
        raise ValueError(problem)
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    model_total = round(model.model_bytes() * scale)
    optimizer_total = round(model.optimizer_bytes() * scale)
    optimizer = _split(optimizer_total, num_processes)
    if model.zero_stage >= 3:
        model_parts = _split(model_total, num_processes)
    else:
        writers = _split(model_total, model.model_parallel)
        model_parts = writers + [0] * (num_processes - model.model_parallel)
    return [RankShard(r, model_parts[r], optimizer[r]) for r in range(num_processes)]
