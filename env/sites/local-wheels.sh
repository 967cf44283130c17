# Site profile: no module system, no site MPI (a workstation, a cloud VM, this CI machine).
# mpi4py + the MPICH wheel, torch from the default index (CPU or CUDA as pip picks).
# bash env/setup-cluster.sh local-wheels
MODULES=""
VENV="${FEDMTL_HOME:-$PWD}/.venv-cluster"
TORCH_SPEC="torch==2.13.0"
TORCH_INDEX=""
MPI="wheel"
PIP_ARGS=""
REQUIRE_GPU=0
DATA=""
