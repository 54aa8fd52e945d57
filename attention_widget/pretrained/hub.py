"""Checkpoints named by a Hugging Face hub id (``"Qwen/Qwen3-0.6B"``) instead of a folder.

Only the files :func:`~attention_widget.pretrained.load_pretrained` reads are fetched, with the
optional ``huggingface_hub`` package (``pip install attention-widget[hub]``) into its usual
cache: ``config.json``, ``generation_config.json``, ``tokenizer.json`` and the safetensors
weights (``model.safetensors``, or the index and the shards it lists).  A model already in
the cache is read from there without the network, also with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["HUB_HINT", "download", "is_hub_id"]

#: How to install what reading a model by its hub id needs.
HUB_HINT = "pip install attention-widget[hub]"

_FILES = ["config.json", "generation_config.json", "tokenizer.json", "model.safetensors.index.json"]
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_ID = re.compile(rf"{_PART}/{_PART}")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as a hub model id ``owner/name`` (letters, digits, ``-_.``)."""
    return bool(_ID.fullmatch(name)) and ".." not in name and "--" not in name


def _offline(constants: Any) -> bool:
    """``HF_HUB_OFFLINE``, as huggingface_hub read it at import or as it is set now."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE) or flag in ("1", "on", "yes", "true")


def _import_hub(repo_id: str) -> tuple[Any, Any]:
    """huggingface_hub's ``snapshot_download`` and ``constants``."""
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError as err:
        raise ImportError(
            f"{repo_id!r} is not a folder; to read it as a model id from the Hugging Face hub, "
            f"install huggingface_hub (`{HUB_HINT}`), or pass the folder of a checkpoint"
        ) from err
    return snapshot_download, constants


def download(repo_id: str) -> Path:
    """The local folder of hub model ``repo_id``, fetched (or found in the cache) as needed.

    Parameters
    ----------
    repo_id : str
        ``owner/name``, see :func:`is_hub_id`.

    Returns
    -------
    pathlib.Path
        The snapshot folder in the Hugging Face cache.

    Raises
    ------
    ImportError
        Without ``huggingface_hub``.
    ConnectionError
        Offline (``HF_HUB_OFFLINE=1``, or no network) with the model not in the cache, or
        another failure of the hub.
    FileNotFoundError
        If the hub has no such model, or it is private or gated.
    """
    snapshot_download, constants = _import_hub(repo_id)
    from huggingface_hub.utils import (  # also where older versions keep them
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = _offline(constants)
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=_FILES,
                                        local_files_only=offline))  # fmt: skip
        index = folder / "model.safetensors.index.json"
        weights = ["model.safetensors"]
        if index.is_file():
            weights = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                                 .values()))  # fmt: skip
        return Path(snapshot_download(repo_id, allow_patterns=_FILES + weights,
                                      local_files_only=offline))  # fmt: skip
    except GatedRepoError:
        raise FileNotFoundError(
            f"{repo_id!r} is a gated model on the Hugging Face hub: accept its terms on its "
            "page, log in (`hf auth login`), and try again"
        ) from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"{repo_id!r} is neither a folder nor a model on the Hugging Face hub (or it is "
            "private: log in with `hf auth login`)"
        ) from None
    except LocalEntryNotFoundError:
        why = (
            "downloading is switched off (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE to download it"
            if offline
            else "the hub could not be reached (no network?): connect and try again"
        )
        raise ConnectionError(
            f"{repo_id!r} is not a folder and not in the local Hugging Face cache, and {why}, "
            "or pass the folder of a downloaded checkpoint"
        ) from None
    except (HfHubHTTPError, OSError) as err:
        raise ConnectionError(
            f"downloading {repo_id!r} from the Hugging Face hub failed: {err}"
        ) from err
