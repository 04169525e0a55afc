"""Hydra search-path plugin of verl-sdar (discovered by Hydra through the hydra_plugins namespace)."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


def _is_verl_app(search_path: ConfigSearchPath) -> bool:
    return any(
        "verl.trainer.config" in (e.path or "") or (e.path or "").rstrip("/").endswith("verl/trainer/config")
        for e in search_path.get_path()
    )


class VerlSdarSearchPathPlugin(SearchPathPlugin):
    """Adds verl-sdar's config groups (``algorithm=sdar`` ...) to verl's Hydra apps."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not _is_verl_app(search_path):
            return
        from verl_sdar.config.searchpath import shadow_config_dir

        search_path.prepend(provider="verl-sdar-shadow", path=f"file://{shadow_config_dir()}")
        search_path.append(provider="verl-sdar", path="pkg://verl_sdar.config")
