"""`interp --help` and `interp CMD --help` import neither torch nor transformers
(they are what makes start-up slow)."""

import subprocess
import sys

import pytest

from interp.cli import COMMANDS, build_parser

HEAVY = ("torch", "transformers")
LIGHT = list(COMMANDS)


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.fast
def test_help_imports_no_heavy_module():
    assert _imported_after("import interp.cli; interp.cli.build_parser(['--help'])") == set()
    assert _imported_after("import interp") == set()


@pytest.mark.fast
@pytest.mark.parametrize("command", LIGHT)
def test_subcommand_help_imports_no_heavy_module(command):
    assert _imported_after(f"import interp.cli; interp.cli.build_parser([{command!r}, '--help'])") == set()


@pytest.mark.fast
def test_the_probe_can_fail():
    assert _imported_after("import torch") == {"torch"}


@pytest.mark.fast
def test_every_registered_command_parses_its_help():
    parser = build_parser()  # imports every subcommand
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([command, "--help"])
        assert exit_.value.code == 0


@pytest.mark.fast
def test_saliency_cli_names_every_method():
    from interp.analyze.saliency import METHODS
    from interp.cli.saliency import METHOD_NAMES

    assert sorted(METHOD_NAMES) == sorted(METHODS)
