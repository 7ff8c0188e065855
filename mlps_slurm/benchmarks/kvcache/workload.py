"""The builtin engine's users and their open-loop requests (reference: kvcache.md §2.1-§2.3).

Users come from the three templates with the reference's draws (type, QoS, then context, generation and think time,
in that order) from one `random.Random(seed)`. Each user then draws every request from its own
`random.Random(f"{seed}:{user_id}")`, so a seed gives the same request sequence per user whatever the threads'
interleaving (the reference shares the module-level generator between threads, so its sequences depend on timing).
For the same reason conversation ids carry a per-user counter, not the clock, and the prefix-cache draw (20 %:
one of three system prompts) is made with the request instead of in the worker.

Per request (UserStream.next): think time x uniform(0.8, 1.2); end the conversation when random() >= 0.8 or at
50 turns; start one when there is none; context = randint(ctx // 4, ctx), generation = randint(gen // 4, gen);
key `<conv>_turn_<n>`; phase PREFILL when the context is >= 10,000 tokens, else PREFILL_DECODE.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator

from mlps_slurm.benchmarks.kvcache import catalog as cat

PREFILL = "prefill"
DECODE = "decode"
PREFILL_DECODE = "both"


@dataclass(frozen=True)
class User:
    user_id: str
    kind: str  # chatbot | coding | document
    qos: str  # interactive | responsive | batch
    priority: int
    context_length: int
    generation_length: int
    think_time: float


def make_users(count: int, seed: int) -> list[User]:
    """The reference's generate_mixed_users, drawn from one generator seeded with the rank's seed."""
    rng = random.Random(seed)
    users = []
    for i in range(count):
        kind = rng.choice(["chatbot", "coding", "document"])
        r = rng.random()
        qos = ("interactive" if r < cat.INTERACTIVE_PROBABILITY else
               "responsive" if r < cat.RESPONSIVE_THRESHOLD else "batch")
        t = cat.USER_TEMPLATES[kind]
        users.append(User(f"user_{i:04d}", kind, qos, cat.QOS_LEVELS[qos].priority, rng.randint(*t.context_range),
                          rng.randint(*t.generation_range), rng.uniform(*t.think_time_range)))
    return users


def system_prompt_key(prompt: cat.SystemPrompt) -> str:
    """The prefix cache's key of a system prompt (sha256 of the text's first 500 characters and word count)."""
    digest = hashlib.sha256(f"{prompt.text[:500]}_{prompt.tokens}".encode()).hexdigest()[:16]
    return f"kv_system_{digest}"


@dataclass
class Request:
    """One inference request; `submit_time` (perf_counter) is set when the user thread enqueues it."""

    user_id: str
    qos: str
    priority: int
    conversation_id: str
    turn: int
    key: str
    context_tokens: int
    generate_tokens: int
    phase: str
    prefix: cat.SystemPrompt | None = None
    delay_s: float = 0.0  # the think time slept before it was issued
    submit_time: float = field(default=0.0, compare=False)

    @property
    def stored_tokens(self) -> int:
        """Tokens written for this request: the context less the system prompt's words on a prefix hit."""
        return max(0, self.context_tokens - self.prefix.tokens) if self.prefix else self.context_tokens


class Conversations:
    """The cache keys of every conversation (shared by user threads and workers). Keeps the 1000 most recently
    used conversations; a forgotten one loses its key list, not its files (reference ConversationManager)."""

    def __init__(self, limit: int = cat.MAX_CONVERSATIONS) -> None:
        self._keys: OrderedDict[str, list[str]] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def start(self, conversation_id: str) -> None:
        with self._lock:
            if len(self._keys) >= self._limit:
                self._keys.popitem(last=False)
            self._keys[conversation_id] = []

    def add_turn(self, conversation_id: str, key: str) -> None:
        with self._lock:
            keys = self._keys.setdefault(conversation_id, [])
            keys.append(key)
            self._keys.move_to_end(conversation_id)

    def other_turn_keys(self, conversation_id: str, key: str) -> list[str]:
        """Every key registered for the conversation except this request's own: earlier turns, and later turns
        already generated but still queued (the reference's get_all_previous_turn_keys filters only the current
        turn's key)."""
        with self._lock:
            return [k for k in self._keys.get(conversation_id, ()) if k != key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)


class UserStream:
    """One user's request sequence; all its randomness comes from its own generator."""

    def __init__(self, user: User, seed: int, conversations: Conversations | None = None) -> None:
        self.user = user
        self.rng = random.Random(f"{seed}:{user.user_id}")
        self.conversations = conversations if conversations is not None else Conversations()
        self._conversation: str | None = None
        self._conversation_count = 0
        self._turn = 0

    def next(self) -> Request:
        u, rng = self.user, self.rng
        delay = u.think_time * rng.uniform(0.8, 1.2)
        if self._conversation is not None and rng.random() >= cat.CONVERSATION_CONTINUE_PROBABILITY:
            self._conversation = None
        if self._conversation is not None and self._turn >= cat.MAX_TURNS_PER_CONVERSATION:
            self._conversation = None
        if self._conversation is None:
            self._conversation = f"conv_{u.user_id}_{self._conversation_count:06d}"
            self._conversation_count += 1
            self._turn = 0
            self.conversations.start(self._conversation)
        context = rng.randint(max(1, u.context_length // 4), u.context_length)
        generate = rng.randint(max(1, u.generation_length // 4), u.generation_length)
        self._turn += 1
        key = f"{self._conversation}_turn_{self._turn}"
        self.conversations.add_turn(self._conversation, key)
        phase = PREFILL if context >= cat.PREFILL_ONLY_CONTEXT_TOKENS else PREFILL_DECODE
        prefix = rng.choice(cat.SYSTEM_PROMPTS) if rng.random() < cat.SYSTEM_PROMPT_HIT_PROBABILITY else None
        return Request(u.user_id, u.qos, u.priority, self._conversation, self._turn, key, context, generate, phase,
                       prefix, delay)


def request_sequence(num_users: int, seed: int, per_user: int) -> Iterator[Request]:
    """The first `per_user` requests of every user, user by user: what a run with this seed issues, without the
    timing (tests compare it between runs)."""
    conversations = Conversations()
    for user in make_users(num_users, seed):
        stream = UserStream(user, seed, conversations)
        for _ in range(per_user):
            yield stream.next()
