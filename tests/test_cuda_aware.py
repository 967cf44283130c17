"""hpc.cuda_aware_mpi: which answer wins, for MPICH and Open MPI (pure function, no MPI)."""

from __future__ import annotations

import pytest

from fedmtl_hpc.hpc import cuda_aware_mpi

MPICH = "MPICH Version:      5.0.2"
OMPI = "Open MPI v4.1.4, package: Debian OpenMPI, ident: 4.1.4, repo rev: v4.1.4, May 26, 2022"
BUILT = "mca:mpi:base:param:mpi_built_with_cuda_support:value:{}\nmca:mpi:base:param:mpi_show_handles:value:false\n"


def _never() -> str:
    raise AssertionError("ompi_info must not run when the library answers itself")


@pytest.mark.parametrize("library, env, query, info, want", [
    (MPICH, {}, lambda: 1, _never, (True, "MPIX_Query_cuda_support")),
    (MPICH, {}, lambda: 0, _never, (False, "MPIX_Query_cuda_support")),
    (MPICH, {"MPIR_CVAR_ENABLE_GPU": "0"}, lambda: 1, _never, (False, "MPIR_CVAR_ENABLE_GPU=0")),
    (MPICH, {"MPIR_CVAR_ENABLE_GPU": "1"}, None, _never, (None, "the library does not say")),
    (OMPI, {"MPIR_CVAR_ENABLE_GPU": "0"}, lambda: 1, _never, (True, "MPIX_Query_cuda_support")),
    (OMPI, {}, None, lambda: BUILT.format("true"), (True, "ompi_info mpi_built_with_cuda_support")),
    (OMPI, {}, None, lambda: BUILT.format("false"), (False, "ompi_info mpi_built_with_cuda_support")),
    (OMPI, {}, None, lambda: "", (None, "the library does not say")),     # ompi_info missing or silent
    (OMPI, {}, None, None, (None, "the library does not say")),
    ("Intel(R) MPI Library 2021.10", {}, None, _never, (None, "the library does not say")),
])
def test_cuda_aware_mpi(library, env, query, info, want):
    assert cuda_aware_mpi(env, library, query, info) == want
