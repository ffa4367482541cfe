"""/dev/shm's free space decides the object-store sync's transport (rrr/core/shm.py): a container's
64 MiB default cannot hold a push, so the sync falls back to Ray's object store, and a requested
`shm` that cannot work fails naming the fix."""

from __future__ import annotations

import pytest

from rrr.core.shm import SHM_DIR, choose_transport, free_bytes, tmpfs_dir_for

MIB = 2**20
SMOLLM2_FP32 = 540 * 10**6  # the embedded model's push, in bytes


def test_a_docker_default_shm_falls_back_to_the_object_store() -> None:
    transport, why = choose_transport("auto", True, 64 * MIB, SMOLLM2_FP32)
    assert transport == "object"
    assert "64 MiB free" in why and "--shm-size" in why


def test_room_for_two_pushes_picks_shm_and_one_is_not_enough() -> None:
    assert choose_transport("auto", True, 2 * SMOLLM2_FP32, SMOLLM2_FP32)[0] == "shm"
    assert choose_transport("auto", True, 2 * SMOLLM2_FP32 - 1, SMOLLM2_FP32)[0] == "object"


def test_another_node_always_takes_the_object_store() -> None:
    transport, why = choose_transport("auto", False, 10**12, SMOLLM2_FP32)
    assert transport == "object" and "another node" in why


def test_a_requested_shm_that_cannot_work_names_the_fix() -> None:
    with pytest.raises(ValueError, match="shm-size"):
        choose_transport("shm", True, 64 * MIB, SMOLLM2_FP32)
    with pytest.raises(ValueError, match="node"):
        choose_transport("shm", False, 10**12, SMOLLM2_FP32)
    assert choose_transport("object", True, 10**12, 1) == ("object", "requested")


def test_hand_over_files_go_where_they_fit(tmp_path) -> None:
    free = free_bytes(str(tmp_path))
    assert free > 0
    assert tmpfs_dir_for(1, str(tmp_path)) == str(tmp_path)
    assert tmpfs_dir_for(free + 2**40, str(tmp_path)) is None  # the temp directory instead
    assert free_bytes(str(tmp_path / "missing")) == 0
    assert tmpfs_dir_for(1, str(tmp_path / "missing")) is None
    if free_bytes(SHM_DIR):  # this machine's real /dev/shm, as the receivers read it
        assert tmpfs_dir_for(1) == SHM_DIR
