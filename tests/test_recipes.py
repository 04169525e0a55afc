"""Every shipped recipe composes with real Hydra and real verl, validates, and says what it claims.

The GPU recipes cannot run here; what can be checked is that they compose (search path, defaults,
algorithm group, policy group), that each key they set exists in verl's own config (a typo would
otherwise be merged silently), that the verl dataclasses accept the result, and that the paper's
hyperparameters are the ones set.
"""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl_sdar.config import SDARConfig

REPO = Path(__file__).resolve().parent.parent
ALGORITHMS = ("grpo", "sdar", "grpo_opsd", "opsd", "rlsd", "skill_sd")
EXPECTED = {  # objective, coef, beta (None: not applicable)
    "grpo": ("none", None, None),
    "sdar": ("sdar", 0.01, 5.0),
    "grpo_opsd": ("sdar", 0.01, 0.0),
    "opsd": ("opsd", 1.0, None),
    "rlsd": ("rlsd", None, None),
    "skill_sd": ("skill_sd", 0.001, None),
}
# env -> (methods, paper settings: batch, prompt, response, max steps, history, turn-row GRPO, agent loop)
ENVS = {
    "alfworld": (ALGORITHMS, dict(batch=16, prompt=2048, response=512, steps=50, history=2, turn_rows=True)),
    "search": (tuple(a for a in ALGORITHMS if a != "opsd"),
               dict(batch=128, prompt=4096, response=3072, steps=4, history=4, turn_rows=False)),
    "webshop": (tuple(a for a in ALGORITHMS if a != "opsd"),
                dict(batch=16, prompt=4096, response=512, steps=15, history=2, turn_rows=True)),
}
CASES = [(env, algorithm) for env, (algorithms, _) in ENVS.items() for algorithm in algorithms]


# our own top-level sections (verl ignores unknown top-level keys)
OWN_SECTIONS = {"env", "sdar", "model_tag"}


def compose_recipe(folder: str, name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "recipes" / folder), version_base=None):
        return compose(name, overrides=list(overrides))


def stock_verl():
    with initialize_config_dir(config_dir=str(_verl_config_dir()), version_base=None):
        return compose("ppo_trainer")


def _verl_config_dir() -> Path:
    import verl.trainer.config as verl_config

    return Path(verl_config.__file__).parent


def leaf_keys(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_keys(value, path + ".")
        else:
            yield path


def has_key(config, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not OmegaConf.is_dict(node) or part not in node.keys():  # `in` is False for ??? values
            return False
        node = node._get_node(part)
    return True


def file_keys(path: Path) -> list[str]:
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    raw.pop("defaults", None)
    raw.pop("hydra", None)
    return [k for k in leaf_keys(raw) if k.split(".")[0] not in OWN_SECTIONS]


def test_every_recipe_file_is_covered_here():
    recipes = {p.relative_to(REPO / "recipes").as_posix() for p in (REPO / "recipes").rglob("*.yaml")}
    covered = {"cpu/codeword_sdar.yaml"}
    for env, (algorithms, _) in ENVS.items():
        covered |= {f"{env}/gpu_common.yaml", f"{env}/tiny_cpu_sdar.yaml", f"{env}/policy/qwen2.5_3b.yaml",
                    f"{env}/policy/qwen2.5_7b.yaml", *(f"{env}/{a}.yaml" for a in algorithms)}
    assert recipes == covered


@pytest.mark.parametrize("env", ["alfworld", "search", "webshop"])
def test_tiny_cpu_recipes_compose_and_validate(env, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = compose_recipe(env, "tiny_cpu_sdar")
    assert cfg.trainer.device == "cpu" and cfg.actor_rollout_ref.rollout.agent.default_agent_loop == env
    SDARConfig.from_config(cfg)


def test_recipe_keys_exist_in_verls_config():
    stock = stock_verl()
    files = [REPO / "recipes" / "cpu" / "codeword_sdar.yaml"]
    for env in ENVS:
        folder = REPO / "recipes" / env
        files += [folder / "gpu_common.yaml", folder / "tiny_cpu_sdar.yaml",
                  *sorted((folder / "policy").glob("*.yaml"))]
    for path in files:
        for key in file_keys(path):
            assert has_key(stock, key), f"{path.name}: {key} is not a verl key"


@pytest.mark.parametrize("policy", ["qwen2.5_3b", "qwen2.5_7b"])
@pytest.mark.parametrize("env,algorithm", CASES)
def test_gpu_recipes_compose_with_the_paper_hyperparameters(env, algorithm, policy, monkeypatch):
    from verl.utils.config import omega_conf_to_dataclass

    monkeypatch.chdir(REPO)  # the recipes name the skill library relative to the repo root
    monkeypatch.delenv("VERL_SDAR_ROOT", raising=False)
    cfg = compose_recipe(env, algorithm, f"policy={policy}")
    OmegaConf.resolve(cfg)
    paper = ENVS[env][1]
    a = cfg.actor_rollout_ref
    size = policy.split("_")[1].upper()
    assert a.model.path == f"Qwen/Qwen2.5-{size}-Instruct"
    assert a.actor.optim.lr == 1e-6 and a.rollout.n == 8 == cfg.env.rollout.n
    assert a.actor.clip_ratio == 0.2 and a.actor.use_kl_loss and a.actor.kl_loss_coef == 0.01
    assert a.actor.kl_loss_type == "low_var_kl"
    assert cfg.algorithm.adv_estimator == ("turn_row_grpo" if paper["turn_rows"] else "grpo")
    assert cfg.data.train_batch_size == paper["batch"] and cfg.data.max_prompt_length == paper["prompt"]
    assert cfg.data.max_response_length == paper["response"]
    assert cfg.env.max_steps == paper["steps"] and cfg.env.history_length == paper["history"]
    assert a.rollout.name == "vllm" and cfg.trainer.n_gpus_per_node == 8 and cfg.trainer.device == "cuda"
    assert cfg.trainer.total_training_steps == 150
    assert cfg.trainer.experiment_name == f"{env}_{algorithm}_{policy}"
    assert a.rollout.agent.default_agent_loop == env
    assert cfg.reward.custom_reward_function.path == f"pkg://verl_sdar.envs.{env}.reward"
    sdar = SDARConfig.from_config(cfg)
    objective, coef, beta = EXPECTED[algorithm]
    assert sdar.objective == objective
    if coef is not None:
        assert sdar.coef == coef
    if beta is not None:
        assert sdar.beta == beta
    if sdar.needs_teacher:
        assert sdar.privileged.source == "skills" and sdar.skills.library == f"./envs/{env}/skills"
    # verl's own typed configs accept the composed sections
    omega_conf_to_dataclass(a.actor)
    omega_conf_to_dataclass(a.rollout)


def test_a_missing_skill_library_fails_at_job_start_naming_the_key(tmp_path, monkeypatch):
    from verl_sdar.config import SDARConfigError, ValidateOnJobStart

    monkeypatch.chdir(tmp_path)  # not the repo root: ./envs/alfworld/skills does not exist
    monkeypatch.delenv("VERL_SDAR_ROOT", raising=False)
    with pytest.raises(SDARConfigError, match="sdar.skills.library"):
        ValidateOnJobStart().on_job_start(compose_recipe("alfworld", "sdar"))
    monkeypatch.setenv("VERL_SDAR_ROOT", str(REPO))  # or point VERL_SDAR_ROOT at the checkout
    ValidateOnJobStart().on_job_start(compose_recipe("alfworld", "sdar"))
