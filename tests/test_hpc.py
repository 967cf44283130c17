"""Tests for fedmtl_hpc.hpc: launcher variables, precedence, devices, threads.

The environments below are copied from real runs where possible (Slurm 22.05
srun --mpi=pmi2 and MPICH hydra mpiexec inside an allocation).
"""

import pytest

from fedmtl_hpc.errors import ConfigError
from fedmtl_hpc.hpc import (
    RankEnv,
    choose_device,
    detect_local_rank,
    node_count,
    parse_tasks_per_node,
    pbs_node_counts,
    scheduler_job_id,
    startup_report,
    threads_per_rank,
)

# srun --mpi=pmi2 -n 2, task 1 (measured)
SRUN = {"SLURM_JOB_ID": "41", "SLURM_STEP_ID": "0", "SLURM_LOCALID": "1", "SLURM_NODEID": "0",
        "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_TASKS_PER_NODE": "2", "SLURM_NTASKS": "2",
        "SLURM_JOB_NUM_NODES": "1", "PMI_RANK": "1", "PMI_SIZE": "2"}
# mpiexec -n 2 inside a 4-task allocation, rank 1 (measured): Slurm's vars are the proxy's
HYDRA_IN_SLURM = {"SLURM_JOB_ID": "41", "SLURM_STEP_ID": "1", "SLURM_LOCALID": "0",
                  "SLURM_NODEID": "0", "SLURM_STEP_TASKS_PER_NODE": "1", "SLURM_TASKS_PER_NODE": "1",
                  "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2", "PMI_RANK": "1", "PMI_SIZE": "2"}
# the batch script itself (no srun step)
BATCH = {"SLURM_JOB_ID": "41", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_TASKS_PER_NODE": "4"}


def test_slurm_srun_step():
    assert detect_local_rank(SRUN) == RankEnv(1, 2, "slurm")


def test_slurm_multi_node_compressed_counts():
    env = {"SLURM_STEP_ID": "0", "SLURM_LOCALID": "2", "SLURM_NODEID": "2",
           "SLURM_TASKS_PER_NODE": "4(x2),3"}
    assert detect_local_rank(env) == RankEnv(2, 3, "slurm")


def test_slurm_ntasks_per_node_when_no_list():
    env = {"SLURM_STEPID": "0", "SLURM_LOCALID": "3", "SLURM_NTASKS_PER_NODE": "4"}
    assert detect_local_rank(env) == RankEnv(3, 4, "slurm")


def test_slurm_batch_step_is_not_trusted():
    assert detect_local_rank(BATCH) == RankEnv(0, 1, "single")
    assert detect_local_rank(BATCH, fallback=lambda: (0, 1)).launcher == "mpi-shm"


def test_parse_tasks_per_node():
    assert parse_tasks_per_node("8") == [8]
    assert parse_tasks_per_node("4(x2),3,2(x1)") == [4, 4, 3, 2]
    with pytest.raises(ConfigError, match="cannot parse"):
        parse_tasks_per_node("4(2)")


def test_openmpi():
    env = {"OMPI_COMM_WORLD_LOCAL_RANK": "3", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    assert detect_local_rank(env) == RankEnv(3, 4, "openmpi")


def test_mpich_hydra():
    env = {"MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "8", "PMI_RANK": "0", "PMI_SIZE": "8"}
    assert detect_local_rank(env) == RankEnv(0, 8, "mpich")


def test_mvapich():
    env = {"MV2_COMM_WORLD_LOCAL_RANK": "2", "MV2_COMM_WORLD_LOCAL_SIZE": "4", "MV2_COMM_WORLD_RANK": "6"}
    assert detect_local_rank(env) == RankEnv(2, 4, "mvapich")


def test_pbs_pro_under_mpiexec_without_local_vars(tmp_path):
    # PBS Pro + a launcher that exports only PMI_RANK: the nodefile answers, else the MPI split
    nodefile = tmp_path / "aaa.pbs01"
    nodefile.write_text("cn01\ncn01\ncn01\ncn01\ncn02\ncn02\ncn02\ncn02\n")
    env = {"PBS_JOBID": "4242.pbs01", "PBS_NODEFILE": str(nodefile), "PMI_RANK": "5", "PMI_SIZE": "8"}
    assert detect_local_rank(env, hostname="cn02.cluster") == RankEnv(1, 4, "pbs")
    assert detect_local_rank(env, fallback=lambda: (1, 4), hostname="cn02") == RankEnv(1, 4, "mpi-shm")
    assert node_count(env) == 2 and scheduler_job_id(env) == "4242.pbs01"


def test_every_launcher_variable_set_alone():
    """Each launcher's pair on its own gives that launcher (the table in hpc.py's docstring)."""
    pairs = {"openmpi": ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
             "mpich": ("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
             "mvapich": ("MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE"),
             "pmi": ("PMI_LOCAL_RANK", "PMI_LOCAL_SIZE")}
    for launcher, (rank, size) in pairs.items():
        assert detect_local_rank({rank: "1", size: "3"}) == RankEnv(1, 3, launcher)
        assert detect_local_rank({rank: "1"}, fallback=lambda: (0, 1)).launcher == "mpi-shm"  # half a pair


def test_pmi_local():
    env = {"PMI_LOCAL_RANK": "5", "PMI_LOCAL_SIZE": "6", "PMI_RANK": "11"}
    assert detect_local_rank(env) == RankEnv(5, 6, "pmi")


def test_pbs_nodefile(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n1.cluster\nn1.cluster\nn2.cluster\nn2.cluster\nn2.cluster\n")
    env = {"PBS_JOBID": "123.server", "PBS_NODEFILE": str(nodefile), "PMI_RANK": "3"}
    assert detect_local_rank(env, hostname="n2") == RankEnv(1, 3, "pbs")
    assert pbs_node_counts(nodefile.read_text()) == {"n1.cluster": 2, "n2.cluster": 3}
    assert node_count(env) == 2
    # rank 3 is not on n1 by nodefile order: the placement is unknown, so no answer
    assert detect_local_rank(env, hostname="n1") == RankEnv(0, 1, "single")


def test_pbs_missing_nodefile_is_a_config_error(tmp_path):
    env = {"PBS_NODEFILE": str(tmp_path / "gone"), "PMI_RANK": "0"}
    with pytest.raises(ConfigError, match="PBS_NODEFILE"):
        detect_local_rank(env, hostname="n1")


def test_precedence_launcher_beats_inherited_slurm():
    assert detect_local_rank(HYDRA_IN_SLURM) == RankEnv(1, 2, "mpich")
    env = {**SRUN, "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "3",
           "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2", "MV2_COMM_WORLD_LOCAL_RANK": "0",
           "MV2_COMM_WORLD_LOCAL_SIZE": "2", "PMI_LOCAL_RANK": "1", "PMI_LOCAL_SIZE": "2"}
    assert detect_local_rank(env).launcher == "openmpi"
    del env["OMPI_COMM_WORLD_LOCAL_RANK"]
    assert detect_local_rank(env).launcher == "mpich"
    del env["MPI_LOCALRANKID"]
    assert detect_local_rank(env).launcher == "mvapich"
    del env["MV2_COMM_WORLD_LOCAL_RANK"]
    assert detect_local_rank(env).launcher == "pmi"
    del env["PMI_LOCAL_SIZE"]
    assert detect_local_rank(env).launcher == "slurm"


def test_precedence_fallback_before_pbs_and_single(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n1\nn1\n")
    env = {"PBS_NODEFILE": str(nodefile), "PMI_RANK": "1"}
    assert detect_local_rank(env, fallback=lambda: (1, 2)) == RankEnv(1, 2, "mpi-shm")
    assert detect_local_rank(env, hostname="n1") == RankEnv(1, 2, "pbs")
    assert detect_local_rank({}) == RankEnv(0, 1, "single")
    called = []
    detect_local_rank(SRUN, fallback=lambda: called.append(1) or (0, 1))
    assert not called  # the collective behind the fallback is not needed


def test_bad_values_name_the_variable():
    with pytest.raises(ConfigError, match="MPI_LOCALRANKID='x'"):
        detect_local_rank({"MPI_LOCALRANKID": "x", "MPI_LOCALNRANKS": "2"})
    with pytest.raises(ConfigError, match="not in"):
        detect_local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"})


@pytest.mark.parametrize("requested,rank,size,gpus,over,want", [
    ("cpu", 0, 4, 4, False, "cpu"),
    ("auto", 2, 4, 0, False, "cpu"),
    ("auto", 3, 4, 4, False, "cuda:3"),
    ("cuda", 1, 2, 4, False, "cuda:1"),
    ("cuda", 5, 8, 4, True, "cuda:1"),
    ("auto", 0, 1, 1, False, "cuda:0"),
])
def test_choose_device(requested, rank, size, gpus, over, want):
    assert choose_device(requested, rank, size, gpus, over) == want


def test_choose_device_errors():
    with pytest.raises(ConfigError, match="no GPU"):
        choose_device("cuda", 0, 1, 0, False)
    with pytest.raises(ConfigError, match="8 ranks on this node share 4"):
        choose_device("auto", 5, 8, 4, False)
    with pytest.raises(ConfigError, match="expecting"):
        choose_device("gpu", 0, 1, 1, False)
    with pytest.raises(ConfigError, match="not in"):
        choose_device("cpu", 2, 2, 0, False)


def test_choose_device_isolated_gpus():
    # --gpus-per-task=1: every rank sees one GPU of its own
    assert choose_device("cuda", 3, 4, 1, False, isolated=True) == "cuda:0"


@pytest.mark.parametrize("env,want", [
    ({}, 1),
    ({"OMP_NUM_THREADS": "4"}, 4),
    ({"OMP_NUM_THREADS": "4,2"}, 4),
    ({"SLURM_CPUS_PER_TASK": "3"}, 3),
    ({"OMP_NUM_THREADS": "2", "SLURM_CPUS_PER_TASK": "8"}, 2),
    ({"OMP_NUM_THREADS": "", "SLURM_CPUS_PER_TASK": "8"}, 8),
])
def test_threads_per_rank(env, want):
    assert threads_per_rank(env) == want


@pytest.mark.parametrize("bad", ["0", "-1", "many"])
def test_threads_per_rank_rejects(bad):
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS"):
        threads_per_rank({"OMP_NUM_THREADS": bad})


def test_scheduler_job_id_and_nodes():
    assert scheduler_job_id(SRUN) == "41"
    assert scheduler_job_id({"PBS_JOBID": "77.pbs01"}) == "77.pbs01"
    assert scheduler_job_id({}) is None
    assert node_count(SRUN) == 1
    assert node_count({}) is None


def test_startup_report_is_one_line():
    line = startup_report(world_size=8, nodes=2, local=RankEnv(0, 4, "slurm"), n_gpus=4,
                          device="cuda:0", mpi_version="MPICH Version:      4.2.0\nMPICH Release date: x",
                          torch_version="2.13.0", threads=1, job_id="41")
    assert "\n" not in line
    for part in ("8 ranks on 2 nodes", "4 on this node", "launcher slurm", "job 41",
                 "4 GPUs visible", "1 thread/rank", "torch 2.13.0", "MPI MPICH Version: 4.2.0"):
        assert part in line


def test_peak_memory_is_read_and_reset_from_proc():
    import numpy as np
    from fedmtl_hpc.hpc import memory_kib, reset_peak_memory
    try:
        base = reset_peak_memory()
    except OSError:
        pytest.skip("no writable /proc/self/clear_refs here")
    a = np.ones(64 << 20, dtype=np.uint8)      # 64 MiB touched
    assert memory_kib("VmHWM") - base >= 60 * 1024
    del a
    after = reset_peak_memory()
    assert memory_kib("VmHWM") - after < 8 * 1024   # the peak starts afresh at the current RSS
    with pytest.raises(OSError):
        memory_kib("NoSuchField")
