"""ALFWorld task generator and play API, on the real TextWorld PDDL engine (needs `alfworld`).

The small set (2 tasks per type per split, seed 0; generated once per session by the
``alfworld_small`` fixture in conftest.py, under pytest's temporary folder) is both a fixture and a
determinism reference: regenerating it must give the same bytes.
"""

import filecmp
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("alfworld")
pytest.importorskip("fast_downward")

from verl_sdar.envs.alfworld import generator as gen  # noqa: E402
from verl_sdar.envs.alfworld.play import (  # noqa: E402
    TASK_TYPES,
    AlfworldEnv,
    find_games,
    run_expert,
    split_dir,
    task_from_observation,
)

SMALL_ARGS = dict(n_train=12, n_eval_seen=12, n_eval_unseen=12, seed=0, initial_state=False)
SMALL_CMD = ("python -m verl_sdar.envs.alfworld.generate OUT_DIR "
             "--n-train 12 --n-eval-seen 12 --n-eval-unseen 12 --seed 0 --no-initial-state")


pytestmark = pytest.mark.usefixtures("alfworld_small")


@pytest.fixture(scope="module")
def manifest(alfworld_small):
    assert (alfworld_small / "manifest.jsonl").is_file(), "small set missing; build it with: " + SMALL_CMD
    return gen.read_manifest(str(alfworld_small))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_same_seed_same_files(tmp_path, alfworld_small):
    """Regenerating the shipped set reproduces it byte for byte (and logs progress)."""
    lines = []
    summary = gen.generate(str(tmp_path / "small"), log=lines.append, **SMALL_ARGS)
    assert summary["counts"] == {"train": 12, "valid_seen": 12, "valid_unseen": 12}
    assert any("[36/36]" in line for line in lines)
    new, ref = _files(tmp_path / "small"), _files(alfworld_small)
    assert new == ref, "file lists differ; rebuild the shipped set with: " + SMALL_CMD
    _, mismatch, errors = filecmp.cmpfiles(str(alfworld_small), str(tmp_path / "small"), ref, shallow=False)
    assert not mismatch and not errors, f"files differ ({mismatch[:3]}); rebuild with: {SMALL_CMD}"


def test_different_seed_different_tasks():
    a = gen.make_split_plan(0)
    b = gen.make_split_plan(1)
    ta = [gen.signature(gen.sample_task(a, "train", i)) for i in range(12)]
    tb = [gen.signature(gen.sample_task(b, "train", i)) for i in range(12)]
    assert ta != tb
    # and sampling is a pure function of (seed, split, index, attempt)
    assert ta == [gen.signature(gen.sample_task(gen.make_split_plan(0), "train", i)) for i in range(12)]


def test_layout_matches_alfworld(manifest, alfworld_small):
    assert (alfworld_small / "logic" / "alfred.pddl").is_file() and (alfworld_small / "logic" / "alfred.twl2").is_file()
    for row in manifest:
        game = alfworld_small / row["game"]
        assert game.parent.name.startswith("trial_")
        assert row["game"].startswith(f"json_2.1.1/{row['split']}/{row['task_type']}-")
        data = json.loads(game.read_text())
        assert set(data) == {"pddl_domain", "grammar", "pddl_problem", "solvable", "walkthrough"}
        assert data["solvable"] is True and len(data["walkthrough"]) == row["expert_steps"] > 0
        assert "UNKNOWN GOAL" not in data["grammar"] and row["goal"] in data["grammar"]
        traj = json.loads((game.parent / "traj_data.json").read_text())
        assert traj["task_type"] == row["task_type"]
        assert traj["pddl_params"]["object_target"] == row["object_target"]
    # find_games uses AlfredTWEnv's rules; split_dir resolves like $ALFWORLD_DATA/json_2.1.1/<split>
    for split in gen.SPLITS:
        assert len(find_games(split_dir(split, alfworld_small))) == 12


def test_all_types_in_every_split(manifest):
    for split in gen.SPLITS:
        rows = [r for r in manifest if r["split"] == split]
        assert len(rows) == 12
        assert sorted({r["task_type"] for r in rows}) == sorted(TASK_TYPES)
        assert all(sum(r["task_type"] == t for r in rows) == 2 for t in TASK_TYPES)


def test_unseen_disjoint_from_train(manifest, alfworld_small):
    def layouts(split):
        return {r["layout"] for r in manifest if r["split"] == split}

    def combos(split):
        return {(r["object_target"], r["parent_target"] or r["toggle_target"]) for r in manifest if r["split"] == split}

    seen = layouts("train") | layouts("valid_seen")
    assert not layouts("valid_unseen") & seen
    assert not combos("valid_unseen") & (combos("train") | combos("valid_seen"))
    # the same holds for a large sample of draws, not just the shipped few
    plan = gen.make_split_plan(0)
    assert not set(plan.seen_layouts) & set(plan.unseen_layouts)
    train = [gen.sample_task(plan, "train", i) for i in range(300)]
    unseen = [gen.sample_task(plan, "valid_unseen", i) for i in range(120)]
    assert not {t.layout.layout_id for t in train} & {t.layout.layout_id for t in unseen}
    assert not {t.combo for t in train} & {t.combo for t in unseen}
    assert all(t.combo in plan.heldout_combos for t in unseen)
    assert {t.task_type for t in unseen} == set(TASK_TYPES)
    # split_plan.json records the same plan
    assert json.loads((alfworld_small / "split_plan.json").read_text()) == json.loads(json.dumps(plan.to_json()))


def test_expert_solves_every_shipped_task(manifest, alfworld_small):
    env = AlfworldEnv(max_steps=60, expert="planner")
    try:
        for row in manifest:
            res = run_expert(alfworld_small / row["game"], env=env, max_steps=60)
            assert res.won, (row["game"], res.error)
            assert res.steps == row["expert_steps"]
    finally:
        env.close()


def test_play_api(manifest, alfworld_small):
    row = next(r for r in manifest if r["task_type"] == "pick_heat_then_place_in_recep")
    game = alfworld_small / row["game"]
    walkthrough = json.loads(game.read_text())["walkthrough"]
    with AlfworldEnv(max_steps=len(walkthrough) + 3) as env:
        obs, info = env.reset(game)
        assert "Your task is to:" in obs and info["task"] == task_from_observation(obs) == row["goal"] + "."
        assert info["won"] is False and "look" in info["admissible_commands"]
        assert info["gamefile"] == str(game)
        obs, reward, done, info = env.step("jump over the moon")  # not admissible: nothing changes
        assert obs == "Nothing happens." and reward == 0.0 and not done
        for k, action in enumerate(walkthrough):
            assert action in info["admissible_commands"]
            obs, reward, done, info = env.step(action)
            assert done == (k == len(walkthrough) - 1)
        assert info["won"] and reward == 1.0
        # reset on the same game starts over; the step limit ends an episode
        obs, info = env.reset(game)
        assert not info["won"] and info["steps"] == 0
        for _ in range(len(walkthrough) + 3):
            obs, reward, done, info = env.step("look")
        assert done and not info["won"]


def test_alfred_tw_env_finds_and_plays_the_games(monkeypatch, alfworld_small):
    """alfworld's own AlfredTWEnv (what verl-agent uses) with ALFWORLD_DATA pointing at the set."""
    from alfworld.agents.environment import get_environment

    monkeypatch.setenv("ALFWORLD_DATA", str(alfworld_small))
    cfg = {"env": {"type": "AlfredTWEnv", "goal_desc_human_anns_prob": 0, "task_types": [1, 2, 3, 4, 5, 6],
                   "domain_randomization": False, "expert_type": "planner"},
           "dataset": {"data_path": "$ALFWORLD_DATA/json_2.1.1/train",
                       "eval_id_data_path": "$ALFWORLD_DATA/json_2.1.1/valid_seen",
                       "eval_ood_data_path": "$ALFWORLD_DATA/json_2.1.1/valid_unseen",
                       "num_train_games": -1, "num_eval_games": -1},
           "logic": {"domain": "$ALFWORLD_DATA/logic/alfred.pddl", "grammar": "$ALFWORLD_DATA/logic/alfred.twl2"},
           "general": {"training_method": "dagger"},
           "rl": {"training": {"max_nb_steps_per_episode": 50}},
           "dagger": {"training": {"max_nb_steps_per_episode": 50}}}
    cls = get_environment("AlfredTWEnv")
    for split in ("train", "eval_in_distribution", "eval_out_of_distribution"):
        assert cls(cfg, train_eval=split).num_games == 12
    tw = cls(cfg, train_eval="eval_in_distribution")
    env = tw.init_env(batch_size=1)
    try:
        obs, infos = env.reset()
        walkthrough = json.loads(open(infos["extra.gamefile"][0]).read())["walkthrough"]
        for action in walkthrough:
            obs, scores, dones, infos = env.step([action])
        assert list(infos["won"]) == [True] and list(dones) == [True]
    finally:
        env.close()


def test_unsolvable_task_is_dropped_and_logged(tmp_path, monkeypatch):
    """A draw the expert cannot win is removed from disk, logged, and replaced by the next draw."""
    real = gen.sample_task

    def broken_first_draw(plan, split, index, attempt=0):
        task = real(plan, split, index, attempt)
        if index == 0 and attempt == 0:
            task.objects = [p for p in task.objects if p.type != task.object_target]  # nothing to pick up
        return task

    monkeypatch.setattr(gen, "sample_task", broken_first_draw)
    lines = []
    summary = gen.generate(str(tmp_path / "out"), 1, 0, 0, seed=0, log=lines.append, initial_state=False)
    assert summary["counts"]["train"] == 1
    assert len(summary["dropped_unsolvable"]) == 1
    assert any("ERROR unsolvable" in line for line in lines)
    rows = gen.read_manifest(str(tmp_path / "out"))
    assert len(rows) == 1 and len(find_games(tmp_path / "out")) == 1
    assert json.loads((tmp_path / "out" / rows[0]["game"]).read_text())["solvable"] is True


def test_refuses_to_overwrite_foreign_data(tmp_path):
    (tmp_path / "json_2.1.1" / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        gen.generate(str(tmp_path), 1, 0, 0, seed=0, log=lambda _: None)
    assert (tmp_path / "json_2.1.1" / "train").is_dir()
    assert not os.path.exists(tmp_path / "manifest.jsonl")
