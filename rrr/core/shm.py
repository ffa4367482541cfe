"""Where a weight file in shared memory may go: /dev/shm, if it has room.

The object-store weight sync hands weights to vLLM as a safetensors file in /dev/shm (a tmpfs:
written and mmapped at memory speed). A container's default /dev/shm is 64 MiB (Docker), which
cannot hold even the embedded 135M model in float32 (540 MB), so its free space is checked
before it is chosen: a push that does not fit goes through the Ray object store, and a
receiver's hand-over file goes to the ordinary temp directory. Both are slower, never wrong.
"""

from __future__ import annotations

import os

SHM_DIR = "/dev/shm"
# A push writes the new file while the previous one may still be mapped by a reader that has
# not finished loading it, so room for two copies is asked for.
COPIES_IN_FLIGHT = 2
SHM_FIX = (
    "give the container more shared memory (Docker: --shm-size=16g; Kubernetes: an emptyDir "
    "with medium: Memory mounted at /dev/shm; KubeRay's manifests in cluster/ do)"
)


def free_bytes(directory: str = SHM_DIR) -> int:
    """Free bytes in `directory`'s file system; 0 when it does not exist."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def tmpfs_dir_for(nbytes: int, directory: str = SHM_DIR) -> str | None:
    """`directory` when a file of `nbytes` fits in it, else None (the default temp dir)."""
    return directory if free_bytes(directory) >= nbytes else None


def choose_transport(
    requested: str, same_node: bool, shm_free: int, push_bytes: int
) -> tuple[str, str]:
    """The object-store sync's transport and why: `shm` when every rollout worker shares the
    learner's node and its /dev/shm holds COPIES_IN_FLIGHT pushes, else `object` (Ray's object
    store). A requested `shm` that cannot work raises ValueError naming the fix."""
    need = COPIES_IN_FLIGHT * push_bytes
    fits = shm_free >= need
    if requested == "object":
        return "object", "requested"
    if requested == "shm":
        if not same_node:
            raise ValueError("transport shm needs every rollout worker on the learner's node")
        if not fits:
            raise ValueError(
                f"{SHM_DIR} has {shm_free / 2**20:,.0f} MiB free, a push needs "
                f"{need / 2**20:,.0f} MiB: {SHM_FIX}"
            )
        return "shm", "requested"
    if not same_node:
        return "object", "a rollout worker is on another node than learner rank 0"
    if not fits:
        return "object", (
            f"{SHM_DIR} on learner rank 0's node has {shm_free / 2**20:,.0f} MiB free, a push "
            f"needs {need / 2**20:,.0f} MiB (the Ray object store is slower; to use {SHM_DIR}, "
            f"{SHM_FIX})"
        )
    return "shm", f"every rollout worker on learner rank 0's node, {SHM_DIR} has room"
