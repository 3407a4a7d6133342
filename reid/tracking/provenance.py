"""Where a result came from, whichever tracker runs (the null tracker included): the git commit, who
and what ran it, on which machine, and the identity of a training that every attempt of it shares."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess

from reid.config import REPO_ROOT, config_hash


def git_commit() -> str:
    """The checkout's HEAD commit, ``-dirty`` appended when tracked files differ from it; ``unknown``
    outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def source_tags(entry_point: str) -> dict[str, str]:
    """MLflow's standard source tags: what ran (``mlflow.source.name``), at which commit, by whom."""
    commit = git_commit()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = os.environ.get("USER", "unknown")
    return {"mlflow.source.name": entry_point, "mlflow.source.type": "LOCAL",
            "mlflow.source.git.commit": commit.removesuffix("-dirty"), "mlflow.user": user,
            "git_commit": commit, "git_dirty": str(commit.endswith("-dirty")).lower()}


def environment_tags() -> dict[str, str]:
    """Where the run ran: torch and CUDA versions, GPU name, host, SLURM job id (when there is one)."""
    import torch

    cuda = torch.cuda.is_available()
    tags = {"torch_version": torch.__version__, "cuda_version": torch.version.cuda or "none",
            "gpu_name": torch.cuda.get_device_name(0) if cuda else "none", "host": socket.gethostname()}
    if os.environ.get("SLURM_JOB_ID"):
        tags["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return tags


def training_identity(config_hash_: str, checkpoint_key: str, reading: str | None = None) -> str:
    """What every attempt of one training shares (12 hex digits): its result config hash (dataset,
    model, seed, result keys, epochs included), its checkpoint key (which adds the training data's
    digest) and its reading. A retry, a resume and a rerun after ``model.pt`` was deleted have the same
    identity; another epoch count, learning rate or training set gives another one."""
    return config_hash("training", config_hash_, checkpoint_key, reading or "")
