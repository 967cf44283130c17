# Site profile: a generic Slurm GPU cluster with Lmod or Environment Modules.
# Read by env/setup-cluster.sh (bash env/setup-cluster.sh generic-slurm). Copy this file
# to env/sites/<your-site>.sh and change the values; any of them can also be given at
# run time as FEDMTL_<NAME>, e.g. FEDMTL_VENV=/scratch/me/venv.
#
# Modules to load, in order, by the names `module avail` shows at your site. Name the
# MPI here: mpi4py is then built against it (MPICC=mpicc, no MPI wheel). Leave MPI out
# to use the mpi4py + MPICH wheels instead (fine on one node; on several nodes it runs
# over TCP without the site's fast interconnect).
MODULES="python cuda openmpi"
# The virtual environment, on a file system the compute nodes see (not /tmp, not $HOME
# if $HOME is not mounted there).
VENV="${SCRATCH:-$HOME}/fedmtl_hpc/venv"
# torch for the site's CUDA: the pinned version, and the index of the matching build
# (https://download.pytorch.org/whl/cu121, .../cu124, ...; empty = the default index).
TORCH_SPEC="torch==2.13.0"
TORCH_INDEX="https://download.pytorch.org/whl/cu124"
# auto (default): build mpi4py against an mpicc the modules put on PATH, else use the
# wheels; source: require mpicc; wheel: always the mpi4py + mpich wheels.
MPI="auto"
# Extra pip arguments, e.g. an offline wheel directory: "--no-index --find-links /shared/wheels".
PIP_ARGS=""
# 1: fail unless torch sees a GPU (run the set-up on a GPU node). 0: only report it
# (login nodes usually have no GPU even with the CUDA build of torch).
REQUIRE_GPU=0
# A shared data directory the module exports as FEDMTL_DATA (optional).
DATA=""
