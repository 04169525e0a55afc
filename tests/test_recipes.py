"""Every shipped recipe composes with real Hydra and real verl, validates, and says what it claims.

The GPU recipes cannot run here; what can be checked is that they compose (search path, defaults,
algorithm group, policy group), that each key they set exists in verl's own config (a typo would
otherwise be merged silently), that the verl dataclasses accept the result, and that the paper's
hyperparameters are the ones set.
"""

import pickle
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl_sdar.config import SDARConfig

REPO = Path(__file__).resolve().parent.parent
# the GPU recipes: every method x every env, each with every policy (`policy=<name>`)
ALGORITHMS = ("grpo", "sdar", "grpo_opsd", "opsd", "rlsd", "skill_sd", "skill_grpo")
POLICIES = {  # policy file -> model
    "qwen2.5_3b": "Qwen/Qwen2.5-3B-Instruct",
    "qwen2.5_7b": "Qwen/Qwen2.5-7B-Instruct",
    "qwen3_1.7b": "Qwen/Qwen3-1.7B",
}
EXPECTED = {  # objective, coef, beta (None: not applicable, or set by the method's own group)
    "grpo": ("none", None, None),
    "sdar": ("sdar", 0.01, 5.0),
    "grpo_opsd": ("sdar", 0.01, 0.0),
    "opsd": ("opsd", 0.01, 5.0),
    "rlsd": ("rlsd", None, None),
    "skill_sd": ("skill_sd", 0.001, None),
    "skill_grpo": (None, None, None),
}
# env -> (methods, paper/reference settings: tasks per step, prompt, response per turn, max steps,
# history, rows per PPO mini-batch, KL coefficient, lr warm-up ratio, validation size and temperature)
ENVS = {
    "alfworld": (ALGORITHMS, dict(batch=16, prompt=2048, response=512, steps=50, history=2, rows=256, kl=0.01,
                                  warmup=0.0, val=128, val_temperature=0.4)),
    "search": (ALGORITHMS, dict(batch=128, prompt=4096, response=512, steps=4, history=4, rows=256, kl=0.001,
                                warmup=0.1, val=None, val_batch=512, val_temperature=0, test_freq=150,
                                val_before_train=False)),
    "webshop": (ALGORITHMS, dict(batch=16, prompt=4096, response=512, steps=15, history=2, rows=64, kl=0.01,
                                 warmup=0.0, val=128, val_temperature=0.4)),
}
CASES = [(env, algorithm) for env, (algorithms, _) in ENVS.items() for algorithm in algorithms]


# our own top-level sections (verl ignores unknown top-level keys)
OWN_SECTIONS = {"env", "sdar", "model_tag"}


def compose_recipe(folder: str, name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "recipes" / folder), version_base=None):
        return compose(name, overrides=list(overrides))


_GPU_RECIPES: dict[tuple[str, str, str], bytes] = {}


def composed_gpu_recipe(env: str, method: str, policy: str):
    """``recipes/<env>/<method>.yaml`` with ``policy=<policy>``, composed and resolved once per process
    (both checks of every GPU recipe below read it); each call returns a copy of its own."""
    key = (env, method, policy)
    if key not in _GPU_RECIPES:
        cfg = compose_recipe(env, method, f"policy={policy}")  # the skill library by name: any working folder
        OmegaConf.resolve(cfg)
        _GPU_RECIPES[key] = pickle.dumps(cfg)
    return pickle.loads(_GPU_RECIPES[key])


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
        if OmegaConf.is_dict(node) and len(node) == 0:
            return True  # an empty mapping in verl's config is free-form (data.apply_chat_template_kwargs)
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
    covered = {"cpu/codeword_sdar.yaml", "cpu/vault_sdar.yaml"}
    covered.add("alfworld/sdar_teacher_7b.yaml")  # composed in tests/test_teacher_model.py
    for env, (algorithms, _) in ENVS.items():
        covered |= {f"{env}/gpu_common.yaml", f"{env}/tiny_cpu_sdar.yaml",
                    *(f"{env}/policy/{policy}.yaml" for policy in POLICIES), *(f"{env}/{a}.yaml" for a in algorithms)}
    assert recipes == covered


@pytest.mark.parametrize("env", ["alfworld", "search", "webshop"])
def test_tiny_cpu_recipes_compose_and_validate(env, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = compose_recipe(env, "tiny_cpu_sdar")
    assert cfg.trainer.device == "cpu" and cfg.actor_rollout_ref.rollout.agent.default_agent_loop == env
    SDARConfig.from_config(cfg)


def test_the_vault_cpu_recipe_composes_and_validates(monkeypatch):
    """recipes/cpu/vault_sdar.yaml: the vault agent loop and reward, turn-row GRPO, the route as the
    teacher's privileged text (the dataset's column), and each arm of the experiment by ``algorithm=``."""
    from verl.utils.config import validate_config

    monkeypatch.chdir(REPO)
    for algorithm, objective in (("sdar", "sdar"), ("grpo", "none"), ("grpo_opsd", "sdar")):
        cfg = compose_recipe("cpu", "vault_sdar", f"algorithm={algorithm}")
        assert cfg.trainer.device == "cpu" and cfg.actor_rollout_ref.rollout.agent.default_agent_loop == "vault"
        assert cfg.reward.custom_reward_function.path == "pkg://verl_sdar.envs.vault.reward"
        assert cfg.algorithm.adv_estimator == "turn_row_grpo" and cfg.env.history_length == 0
        assert cfg.actor_rollout_ref.rollout.n == cfg.env.rollout.n == 8
        sdar = SDARConfig.from_config(cfg)
        assert sdar.objective == objective and sdar.privileged.source == "column"  # extra_info.privileged
        validate_config(cfg, use_reference_policy=True, use_critic=False)


def test_recipe_keys_exist_in_verls_config():
    stock = stock_verl()
    files = [REPO / "recipes" / "cpu" / "codeword_sdar.yaml", REPO / "recipes" / "cpu" / "vault_sdar.yaml"]
    for env in ENVS:
        folder = REPO / "recipes" / env
        files += [folder / "gpu_common.yaml", folder / "tiny_cpu_sdar.yaml",
                  *sorted((folder / "policy").glob("*.yaml"))]
    for path in files:
        for key in file_keys(path):
            assert has_key(stock, key), f"{path.name}: {key} is not a verl key"


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("env,algorithm", CASES)
def test_gpu_recipes_compose_with_the_paper_hyperparameters(env, algorithm, policy, monkeypatch, tmp_path):
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    monkeypatch.chdir(tmp_path)  # the recipes name a shipped skill library: no working folder needed
    cfg = composed_gpu_recipe(env, algorithm, policy)
    paper = ENVS[env][1]
    a = cfg.actor_rollout_ref
    assert a.model.path == POLICIES[policy]
    thinking = OmegaConf.select(cfg, "data.apply_chat_template_kwargs.enable_thinking")
    assert thinking is (False if policy.startswith("qwen3") else None)  # Qwen3: thinking off, as the reference
    assert a.actor.optim.lr == 1e-6 and a.actor.optim.lr_warmup_steps_ratio == paper["warmup"]
    assert a.rollout.n == 8 == cfg.env.rollout.n
    # verl's V1 trainer multiplies ppo_mini_batch_size by rollout.n: the product is rows per mini-batch
    assert a.actor.ppo_mini_batch_size * a.rollout.n == paper["rows"] and a.actor.ppo_epochs == 1
    assert a.actor.clip_ratio == 0.2 and a.actor.use_kl_loss and a.actor.kl_loss_coef == paper["kl"]
    assert a.actor.kl_loss_type == "low_var_kl" and a.actor.entropy_coeff == 0.001
    assert cfg.algorithm.adv_estimator == "turn_row_grpo"  # one training row per turn in every env
    if env == "search":
        assert cfg.env.turn_rows is True
    assert cfg.data.train_batch_size == paper["batch"] and cfg.data.max_prompt_length == paper["prompt"]
    assert cfg.data.max_response_length == paper["response"]
    assert cfg.env.max_steps == paper["steps"] and cfg.env.history_length == paper["history"]
    # Search-QA: the whole test set (512 is the reference's validation batch), once, at the end
    assert cfg.data.val_max_samples == paper["val"] and cfg.data.val_batch_size == paper.get("val_batch", paper["val"])
    assert cfg.trainer.test_freq == paper.get("test_freq", 5)
    assert cfg.trainer.val_before_train is paper.get("val_before_train", True)
    assert a.rollout.val_kwargs.temperature == paper["val_temperature"]
    assert a.rollout.val_kwargs.do_sample == (paper["val_temperature"] > 0)
    assert a.rollout.name == "vllm" and cfg.trainer.n_gpus_per_node == 8 and cfg.trainer.device == "cuda"
    assert cfg.trainer.total_training_steps == 150
    assert cfg.trainer.experiment_name == f"{env}_{algorithm}_{policy}"
    assert a.rollout.agent.default_agent_loop == env
    assert cfg.reward.custom_reward_function.path == f"pkg://verl_sdar.envs.{env}.reward"
    sdar = SDARConfig.from_config(cfg)
    objective, coef, beta = EXPECTED[algorithm]
    if objective is not None:
        assert sdar.objective == objective
    if coef is not None:
        assert sdar.coef == coef
    if beta is not None:
        assert sdar.beta == beta
    assert sdar.privileged.source == "skills" and sdar.skills.library == f"builtin:{env}"
    # verl's own typed configs and its start-up checks accept the composed config
    omega_conf_to_dataclass(a.actor)
    omega_conf_to_dataclass(a.rollout)
    validate_config(cfg, use_reference_policy=True, use_critic=False)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("env,method", CASES)
def test_every_gpu_recipe_agrees_with_the_fidelity_table(env, method, policy):
    """docs/fidelity.md's table against every GPU recipe (the table's reader and its other checks are
    tests/test_fidelity.py's; this check lives here to read the compositions of the test above)."""
    from test_fidelity import composed, mismatches, table

    cfg, sdar = composed(env, method, policy)
    problems = mismatches(table(), env, method, policy, cfg, sdar)
    assert not problems, "\n".join(problems)


def test_a_missing_skill_library_fails_at_job_start_naming_the_key(tmp_path, monkeypatch):
    from verl_sdar.config import ValidateOnJobStart

    monkeypatch.chdir(tmp_path)  # not the repo root: the shipped library is found by name all the same
    ValidateOnJobStart().on_job_start(compose_recipe("alfworld", "sdar"))
    # SystemExit: Hydra would turn any other exception of a callback into a warning and go on
    unknown = (r"sdar\.skills\.library: unknown shipped skill library builtin:alfwrld; "
               r"shipped: builtin:alfworld, builtin:codeword, builtin:search, builtin:webshop")
    with pytest.raises(SystemExit, match=unknown):
        ValidateOnJobStart().on_job_start(compose_recipe("alfworld", "sdar", "sdar.skills.library=builtin:alfwrld"))
    missing = r"sdar\.skills\.library: .*envs/alfworld/skills: skill library folder does not exist"
    relative = "sdar.skills.library=envs/alfworld/skills"  # a relative folder: from the working folder
    with pytest.raises(SystemExit, match=missing):
        ValidateOnJobStart().on_job_start(compose_recipe("alfworld", "sdar", relative))
    # a folder path still works
    ValidateOnJobStart().on_job_start(
        compose_recipe("alfworld", "sdar", f"sdar.skills.library={REPO / 'envs' / 'alfworld' / 'skills'}"))
