# Site profile: a generic PBS Pro GPU cluster with Environment Modules.
# Read by env/setup-cluster.sh (bash env/setup-cluster.sh generic-pbs); see
# env/sites/generic-slurm.sh for what each value means. Any value can be given at run
# time as FEDMTL_<NAME>.
MODULES="python/3.11 cuda/12.4 openmpi/4.1"
VENV="${PBS_O_HOME:-$HOME}/fedmtl_hpc/venv"
TORCH_SPEC="torch==2.13.0"
TORCH_INDEX="https://download.pytorch.org/whl/cu124"
MPI="auto"
PIP_ARGS=""
REQUIRE_GPU=0
DATA=""
