"""Tests for fedmtl_hpc.jobcheck: good and bad #PBS / #SBATCH snippets."""

import pytest

from fedmtl_hpc.jobcheck import Problem, check_file, check_text, main

GOOD_PBS = """#!/bin/bash -l
#PBS -N fedem_cifar
#PBS -l select=2:ncpus=8:mpiprocs=4:ompthreads=2:mem=64gb
#PBS -l walltime=12:00:00
#PBS -l mem=128GB
#PBS -j oe
#PBS -o logs/fedem.out
#PBS -e logs/fedem.err
#PBS -q gpu
#PBS -A proj42
#PBS -m abe
#PBS -M someone@example.org
#PBS -V
#PBS -W depend=afterok:123.server
#PBS -r y
#PBS -J 1-10:2%4
## a disabled directive: #PBS -X
cd "${PBS_O_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}"
mpiexec fedmtl-hpc run configs/x.yaml
"""

GOOD_SLURM = """#!/bin/bash -l
#SBATCH -J fedem
#SBATCH -N 2
#SBATCH --ntasks=8
#SBATCH -n 8
#SBATCH --ntasks-per-node=4
#SBATCH -c 2
#SBATCH --time=1-12:00:00
#SBATCH -t 30
#SBATCH --gpus-per-node=4
#SBATCH --gpus-per-node a100:4
#SBATCH --signal=B:USR1@300
#SBATCH --signal USR1@120
#SBATCH --requeue
#SBATCH --array=1-6%3
#SBATCH -a 0-15:4,20
#SBATCH --open-mode=append
srun fedmtl-hpc run configs/x.yaml
"""


def errors(text: str) -> list[Problem]:
    return [p for p in check_text(text) if p.severity == "error"]


def one_error(text: str) -> Problem:
    found = errors(text)
    assert len(found) == 1, found
    return found[0]


def test_good_scripts_pass():
    assert check_text(GOOD_PBS) == []
    assert check_text(GOOD_SLURM) == []


def test_directive_after_first_command():
    text = "#!/bin/bash\n#PBS -N a\necho hi\n#PBS -l walltime=01:00:00\n#SBATCH -n 2\n"
    found = errors(text)
    assert [p.line for p in found] == [4, 5]
    assert "after the first command (line 3)" in found[0].message
    assert "sbatch still applies it" in found[0].message
    assert "sbatch ignores it" in found[1].message


@pytest.mark.parametrize("directive,needle", [
    ("-X", "unknown #PBS option '-X'"),
    ("-l select=1:ncpus=eight", "ncpus='eight'"),
    ("-l select=0:ncpus=8", "chunk count"),
    ("-l select=1:ncpus=8:mpiprocs", "not res=value"),
    ("-l select=1:ncpus=8:mem=4", "mem='4'"),
    ("-l select=two:ncpus=8", "neither a chunk count"),
    ("-l walltime=1:00", "expecting HH:MM:SS"),
    ("-l walltime=01:75:00", "expecting HH:MM:SS"),
    ("-l walltime=3600", "sbatch reads minutes"),
    ("-l mem=4000", "with a unit"),
    ("-l =4gb", "expecting key=value"),
    ("-l walltime", "expecting key=value"),
    ("-l select=1:ncpus=8,walltime=01:00:00", "one resource per -l"),
    ("-j yes", "expecting oe"),
    ("-m x", "letters from"),
    ("-r maybe", "y or n"),
    ("-J 1,2,3", "array range"),
    ("-W afterok:12", "attribute=value"),
    ("-N 1job", "starts with a letter"),
    ("-o", "needs a value"),
])
def test_bad_pbs(directive, needle):
    problem = one_error(f"#!/bin/bash\n#PBS {directive}\ntrue\n")
    assert problem.line == 2
    assert needle in problem.message


@pytest.mark.parametrize("directive,needle", [
    ("--time=1:00:00:00", "--time"),
    ("-t 2h", "-t"),
    ("-n eight", "positive integer"),
    ("--ntasks=0", "positive integer"),
    ("--ntasks", "positive integer"),
    ("-N 0", "N or MIN-MAX"),
    ("--gpus-per-node=four", "integer count"),
    ("--signal=B:USR1@soon", "--signal"),
    ("--signal=B:@300", "--signal"),
    ("--array=1-", "--array"),
    ("--array=a-b", "--array"),
    ("--open-mode=add", "append or truncate"),
])
def test_bad_sbatch(directive, needle):
    problem = one_error(f"#!/bin/bash\n#SBATCH {directive}\nsrun true\n")
    assert problem.line == 2
    assert needle in problem.message


def test_attached_pbs_values_are_checked():
    assert check_text("#PBS -lselect=1:ncpus=4:mpiprocs=4\n#PBS -lwalltime=00:10:00\n") == []
    assert "sbatch reads minutes" in one_error("#PBS -lwalltime=10\n").message


def test_stray_pbs_argument():
    found = errors("#PBS -l mem=4 gb\n")
    assert [p.message.split(":")[0] for p in found] == ["mem='4'", "#PBS"]
    assert "unexpected argument 'gb'" in found[1].message


def test_warnings_do_not_count_as_errors():
    found = check_text("#PBS -l select=1:ncpus=4:ngpus=2\n#PBS -r n\n#SBATCH -n 4\ntrue\n")
    assert [p.severity for p in found] == ["warning", "warning", "warning"]
    assert "ngpus is not honoured" in found[0].message
    assert "both #PBS and #SBATCH" in found[2].message


def test_several_problems_in_line_order():
    text = "#PBS -l mem=1\n#PBS -q\n#PBS -j x\n"
    assert [p.line for p in errors(text)] == [1, 2, 3]


def test_quoting_and_empty_directives():
    assert errors('#PBS -N "unterminated\n')[0].message.startswith("#PBS: cannot split")
    assert one_error("#SBATCH\n").message == "#SBATCH with no option"


def test_check_file_and_main(tmp_path, capsys):
    good, bad = tmp_path / "good.pbs", tmp_path / "bad.slurm"
    good.write_text(GOOD_PBS)
    bad.write_text("#!/bin/bash\n#SBATCH -n 0\n")
    assert check_file(good) == []
    assert main([str(good)]) == 0
    assert main([str(good), str(bad)]) == 1
    assert f"{bad}:2: error: -n '0'" in capsys.readouterr().out
    assert main([]) == 2


def test_shipped_templates_pass():
    from pathlib import Path
    jobs = Path(__file__).resolve().parents[1] / "jobs"
    paths = sorted(jobs.glob("*.slurm")) + sorted(jobs.glob("*.pbs"))
    assert len(paths) >= 6
    for path in paths:
        assert [p for p in check_file(path) if p.severity == "error"] == [], path
