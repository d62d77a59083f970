import pytest

from interp.cli import main
from interp.cli.scan import parse_sets
from interp.errors import InterpError


@pytest.mark.fast
def test_parse_sets():
    assert parse_sets(["heads.n_random=4", "heads.texts=[\"a b\"]", "heads.x=abc"]) == \
        {"heads": {"n_random": 4, "texts": ["a b"], "x": "abc"}}
    with pytest.raises(InterpError, match="ANALYSIS.KEY=VALUE"):
        parse_sets(["n_random=4"])


@pytest.mark.fast
def test_bad_input_exit_code_2_and_nothing_created(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "no-such-model"), "--out", str(out), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()
    assert main(["scan", "--analyses", "heads,bogus", "--out", str(out), "--quiet"]) == 2
    assert "unknown analysis 'bogus'" in capsys.readouterr().err and not out.exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["scan", "--out", str(blocker / "sub"), "--quiet"]) == 2
    assert "which is a file" in capsys.readouterr().err


@pytest.mark.fast
def test_list(capsys):
    assert main(["scan", "--list"]) == 0
    assert "heads" in capsys.readouterr().out
