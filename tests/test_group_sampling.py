"""The n sessions of one prompt are n independent draws, also under ``full_determinism``.

The defect this guards against: under ``actor_rollout_ref.rollout.full_determinism=true`` every
session of a GRPO group was sent with the same request id (``det-{priority}-{turn}``, ``priority``
0 on verl's V1 path) and so the same sampling seed: the n rollouts of a prompt were token-identical
and the outcome reward gave no gradient. Each agent loop here plays the n sessions of one dataset
row the way verl's V1 agent-loop worker starts them (``session_id=0..n-1``, no ``priority``) against
the real ``hf`` rollout server (in process, the tiny random model, temperature 1), and the sessions
must differ; a second server with the same seeds must draw the same samples again.
"""

from __future__ import annotations

import asyncio

import pytest
import verl  # noqa: F401  (first, so the plugin entry point registers verl_sdar.cpu in order)
from agent_loop_helpers import LocalHFServer, make_agent_loop, run_group

from verl_sdar.request_identity import DETERMINISTIC_PREFIX, SEED_KEY, request_identity

N = 4
RESPONSE_LENGTH = 24
PROMPT_LENGTH = 1536
ROLLOUT = {"full_determinism": True, "seed": 0}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from verl_sdar.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def tokenizer(model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def hf_server(model_path, full_determinism=True):
    from omegaconf import OmegaConf
    from verl.workers.config import RolloutConfig

    from verl_sdar.cpu.hf_rollout import HFRolloutServer

    config = RolloutConfig(name="hf", tensor_model_parallel_size=1, prompt_length=PROMPT_LENGTH,
                           response_length=RESPONSE_LENGTH, dtype="float32", full_determinism=full_determinism)
    model_config = OmegaConf.create({"_target_": "verl.workers.config.HFModelConfig", "path": str(model_path)})
    return LocalHFServer(HFRolloutServer(config, model_config, replica_rank=0))


def v1_kwargs(row: dict, index: int = 0) -> dict:
    """What verl's V1 worker passes an agent loop besides ``session_id``: the row's fields, its uid,
    the dataset index and the step."""
    return {**{k: row[k] for k in ("data_source", "reward_model", "extra_info", "agent_name") if k in row},
            "uid": "f3b9c0de-uid", "index": index, "global_steps": 1}


def sessions_and_requests(make_loop, model_path, row_kwargs):
    """Play one group twice, each time on a fresh server with the same seeds: per play, each
    session's response ids per turn, and the request ids sent."""
    plays = []
    for _ in range(2):
        server = hf_server(model_path)
        groups = run_group(lambda server=server: make_loop(server), N, **row_kwargs)
        plays.append(([[tuple(out.response_ids) for out in outs] for outs in groups], server))
    return plays


def assert_independent_and_reproducible(plays):
    (first, server), (second, _) = plays
    first_turns = [session[0] for session in first]
    assert len(set(first_turns)) == N, f"sessions of one prompt drew identical responses: {first_turns}"
    assert len(set(server.request_ids)) == len(server.request_ids), "request ids repeat"
    assert all(r.startswith(DETERMINISTIC_PREFIX) for r in server.request_ids)
    assert len({p[SEED_KEY] for p in server.sampling_params}) == len(server.sampling_params)
    assert first == second, "the same seeds drew different samples"


# ----------------------------------------------------------------------------- the identity itself
class _Rollout:
    def __init__(self, full_determinism=True, seed=0):
        self.full_determinism, self.seed = full_determinism, seed


def test_identity_separates_sessions_and_turns_and_ignores_the_random_uid():
    row = {"uid": "a", "session_id": 0, "index": 7, "global_steps": 3}
    ids = [1, 2, 3]
    base = request_identity(_Rollout(), row, 0, ids)
    assert base == request_identity(_Rollout(), row, 0, ids)  # reproducible
    assert base.request_id == "det-a-0-0-0"
    # the uid names the request (unique while it runs) but never moves the seed: verl draws it at random
    assert request_identity(_Rollout(), {**row, "uid": "b"}, 0, ids).seed == base.seed
    others = [
        request_identity(_Rollout(), {**row, "session_id": 1}, 0, ids),
        request_identity(_Rollout(), row, 1, ids),
        request_identity(_Rollout(), {**row, "index": 8}, 0, ids),
        request_identity(_Rollout(), {**row, "global_steps": 4}, 0, ids),
        request_identity(_Rollout(), {**row, "priority": 5}, 0, ids),
        request_identity(_Rollout(seed=1), row, 0, ids),
        request_identity(_Rollout(), row, 0, [1, 2, 4]),
    ]
    assert len({base.seed, *(o.seed for o in others)}) == len(others) + 1
    assert base.sampling_params({"temperature": 1.0}) == {"temperature": 1.0, SEED_KEY: base.seed}


def test_identity_without_full_determinism_is_a_fresh_uuid_and_no_seed():
    a = request_identity(_Rollout(full_determinism=False), {"uid": "a"}, 0, [1])
    b = request_identity(_Rollout(full_determinism=False), {"uid": "a"}, 0, [1])
    assert a.seed is None and a.request_id != b.request_id and not a.request_id.startswith(DETERMINISTIC_PREFIX)
    assert a.sampling_params({"temperature": 1.0}) == {"temperature": 1.0}


def test_the_bug_a_shared_seed_collapses_the_group(model_path):
    """The test's power: with one seed for every request (what verl's vLLM server does under
    full_determinism when a request names none) the sessions of a prompt are identical."""
    server = hf_server(model_path)

    async def go():
        return await asyncio.gather(*(server.generate("det-0", [5, 6, 7, 8], {"temperature": 1.0, SEED_KEY: 123})
                                      for _ in range(N)))

    outs = asyncio.run(go())
    assert len({tuple(o.token_ids) for o in outs}) == 1


# ----------------------------------------------------------------------------- each loop
def test_verl_single_turn_loop_served_by_hf_draws_n_samples(model_path, tokenizer):
    """verl's own single-turn loop names every request ``det-0`` on the V1 path; the hf server counts
    repeats of an id and prompt, so the group still gets n draws, reproducible as a multiset."""
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

    row = {"raw_prompt": [{"role": "user", "content": "say the code word"}], "uid": "u", "index": 0, "global_steps": 1}
    plays = []
    for _ in range(2):
        server = hf_server(model_path)
        groups = run_group(lambda server=server: make_agent_loop(
            SingleTurnAgentLoop, tokenizer, server, {}, RESPONSE_LENGTH, PROMPT_LENGTH, rollout=ROLLOUT), N, **row)
        plays.append([tuple(outs[0].response_ids) for outs in groups])
        assert set(server.request_ids) == {"det-0"}  # verl's id, the same for every session
    assert len(set(plays[0])) == N, plays[0]
    assert sorted(plays[0]) == sorted(plays[1])


def test_alfworld_sessions_are_independent(model_path, tokenizer, alfworld_small):
    pytest.importorskip("textworld")
    from verl_sdar.envs.alfworld.agent_loop import AlfworldAgentLoop
    from verl_sdar.envs.alfworld.dataset import make_rows
    from verl_sdar.envs.alfworld.play import find_games, split_dir

    row = make_rows(find_games(split_dir("train", alfworld_small))[:1], "train")[0]
    plays = sessions_and_requests(lambda server: make_agent_loop(
        AlfworldAgentLoop, tokenizer, server, {"max_steps": 2, "history_length": 2}, RESPONSE_LENGTH, PROMPT_LENGTH,
        rollout=ROLLOUT), model_path, v1_kwargs(row))
    assert_independent_and_reproducible(plays)


def test_webshop_sessions_are_independent(model_path, tokenizer, tmp_path):
    import json

    from verl_sdar.envs.webshop.agent_loop import WebShopAgentLoop
    from verl_sdar.envs.webshop.catalogue import build
    from verl_sdar.envs.webshop.dataset import make_rows

    build(tmp_path, n_products=300, n_train=10, n_test=5, seed=0)
    goal = json.loads((tmp_path / "goals_test.jsonl").read_text().splitlines()[0])
    row = make_rows([goal], "test")[0]
    env = {"max_steps": 2, "history_length": 2, "catalogue_dir": str(tmp_path)}
    plays = sessions_and_requests(lambda server: make_agent_loop(
        WebShopAgentLoop, tokenizer, server, env, RESPONSE_LENGTH, PROMPT_LENGTH, rollout=ROLLOUT),
        model_path, v1_kwargs(row))
    assert_independent_and_reproducible(plays)


@pytest.mark.parametrize("turn_rows", [False, True], ids=["episode_rows", "turn_rows"])
def test_search_sessions_are_independent(model_path, tokenizer, tmp_path, turn_rows):
    import json

    from verl_sdar.envs.search.agent_loop import SearchAgentLoop
    from verl_sdar.envs.search.corpus import build
    from verl_sdar.envs.search.dataset import make_row

    build(tmp_path, n_train=8, n_test=4, seed=0)
    q = json.loads((tmp_path / "test.jsonl").read_text().splitlines()[0])
    row = make_row(q["question"], q["golden_answers"], q["task_type"], "countryinfo", "test", 0)
    env = {"turn_rows": turn_rows, "max_steps": 2, "history_length": 4,
           "retriever": {"corpus_path": str(tmp_path / "corpus.jsonl"), "topk": 3}}
    plays = sessions_and_requests(lambda server: make_agent_loop(
        SearchAgentLoop, tokenizer, server, env, RESPONSE_LENGTH, PROMPT_LENGTH, rollout=ROLLOUT),
        model_path, v1_kwargs(row))
    assert_independent_and_reproducible(plays)
