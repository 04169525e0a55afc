"""The SDAR trainer gets exactly stock verl's *sync* behaviour (real verl, no Ray).

verl's V1 base trainer compares ``trainer_mode`` with ``"sync"`` to choose the replay buffer, the
dataloader's fetch size and whether TransferQueue state goes into checkpoints; ``algorithm=sdar``
sets ``trainer.v1.trainer_mode=sdar`` only to select our class. Both trainers are built from the
same CPU recipe (stock: ``~sdar trainer.v1.trainer_mode=sync``) up to their dataloaders.
"""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from verl_sdar.tasks.codeword import build
    from verl_sdar.tiny_model import build_tiny_model

    work = tmp_path_factory.mktemp("mode")
    build_tiny_model(work / "tiny-model", seed=0)
    build(work / "codeword", n_train=16, n_val=8, seed=0)
    return work


def _trainer(work: Path, monkeypatch, *overrides: str):
    import verl  # noqa: F401  (loads the plugin)
    from verl.trainer.ppo.v1 import get_trainer_cls

    monkeypatch.setenv("VERL_SDAR_WORK", str(work))
    with initialize_config_dir(str(REPO / "recipes" / "cpu"), version_base=None):
        config = compose("codeword_sdar", overrides=list(overrides))
    with open_dict(config):
        config.transfer_queue.enable = True
    trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config=config)
    trainer._init_tokenizer()
    trainer._init_dataloader()
    return trainer


def test_sdar_trainer_batches_like_stock_sync_verl(work, monkeypatch):
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from verl_sdar.trainer import SDARTrainer

    ours = _trainer(work, monkeypatch)
    stock = _trainer(work, monkeypatch, "~sdar", "trainer.v1.trainer_mode=sync")
    assert type(ours) is SDARTrainer and type(stock) is PPOTrainerSync
    assert ours.config.trainer.v1.trainer_mode == "sdar"  # the selection stays visible in the config
    assert ours.trainer_mode == stock.trainer_mode == "sync"
    # the replay buffer verl builds for sync mode (not ReplayBufferAsync), with the same settings
    assert type(ours.replay_buffer) is type(stock.replay_buffer) is ReplayBuffer
    assert vars(ours.replay_buffer).keys() == vars(stock.replay_buffer).keys()
    for name in ("trainer_mode", "gen_batch_size", "train_batch_size", "max_inflight_gen_batches"):
        assert getattr(ours.replay_buffer, name, None) == getattr(stock.replay_buffer, name, None), name
    assert ours.parameter_sync_step == stock.parameter_sync_step
    # whole train batches per dataloader fetch (async modes force data.gen_batch_size to 1)
    assert ours.config.data.get("gen_batch_size") == stock.config.data.get("gen_batch_size")
    assert ours.train_dataloader.batch_size == stock.train_dataloader.batch_size == ours.config.data.train_batch_size


def test_only_our_mode_selects_the_sdar_trainer(work, monkeypatch):
    ours = _trainer(work, monkeypatch)
    with pytest.raises(ValueError, match="trainer_mode"):
        ours.trainer_mode = "colocate_async"
