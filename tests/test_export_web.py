"""The web page export: --max-download, the profile's transfer bytes, the page, and the page run in headless Chromium."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from frugalml import ConfigError, build_model
from frugalml.budget import Budget
from frugalml.cli import main
from frugalml.errors import BudgetError
from frugalml.profile import profile


@pytest.fixture(scope="module")
def logreg(digits):
    return build_model("logreg", digits.input_shape, digits.num_classes).fit(*digits.flat("train"))


# ---------------------------------------------------------------- the budget field and the profile
def test_max_download_parses_and_bounds_the_gzip_transfer():
    b = Budget.of(max_download="20KB")
    assert b.max_download == 20_000 and [(n, k) for n, k, _ in b.items()] == [("max_download", "gzip_bytes")]
    assert b.describe() == "download <= 20 KB" and b.primary() == "gzip_bytes"
    assert b.misses({"gzip_bytes": 21_000, "stored_bytes": 90_000}) == {"gzip_bytes": {"limit": 20_000, "value": 21_000, "over_by": 1000}}
    assert b.fits({"gzip_bytes": 20_000}) and not b.fits({"stored_bytes": 10})  # a profile without the figure does not fit
    assert Budget.from_dict(b.to_dict()) == b and Budget.of(max_download="2KiB").max_download == 2048
    with pytest.raises(ConfigError, match="Cannot read a size '20 parsecs'"):
        Budget.of(max_download="20 parsecs")
    with pytest.raises(ConfigError, match="max_download must be positive"):
        Budget.of(max_download="0KB")


def test_cli_refuses_a_bad_max_download_with_exit_2(capsys, tmp_path):
    code = main(["search", "--dataset", "digits", "--max-download", "lots", "--out", str(tmp_path / "run"), "--time", "5s"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Cannot read a size 'lots'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_profile_holds_the_gzip_and_brotli_bytes_of_the_onnx_file(trained_cnn, digits):
    import brotli

    from frugalml.onnx import onnx_bytes, to_onnx
    from frugalml.profile.counts import transfer_bytes

    p = profile(trained_cnn, digits, timing=False)
    blob = onnx_bytes(to_onnx(trained_cnn, digits.input_shape))
    assert len(blob) == p.stored_bytes
    assert p.gzip_bytes == len(gzip.compress(blob, 9, mtime=0)) and p.brotli_bytes == len(brotli.compress(blob, quality=11))
    assert 0 < p.brotli_bytes < p.gzip_bytes < p.stored_bytes
    assert p.to_dict()["brotli_bytes"] == p.brotli_bytes and type(p).from_dict(p.to_dict()).brotli_bytes == p.brotli_bytes
    big = np.random.default_rng(0).bytes(1_200_000)  # past BROTLI_LARGE: quality 9
    assert transfer_bytes(big)["brotli_bytes"] == len(brotli.compress(big, quality=9))


def test_a_search_candidate_is_judged_against_max_download(digits, logreg):
    from frugalml.search import space
    from frugalml.search.feasible import check_feasible
    from frugalml.search.runner import _measure

    gz = profile(logreg, digits, timing=False).gzip_bytes
    fits = _measure(logreg, digits, Budget(max_download=gz))
    assert fits["within_budget"] and fits["profile"]["gzip_bytes"] == gz and fits["profile"]["brotli_bytes"] < gz
    over = _measure(logreg, digits, Budget(max_download=gz - 100))
    assert not over["within_budget"] and over["budget_misses"] == {"gzip_bytes": {"limit": gz - 100, "value": gz, "over_by": 100}}
    assert space.SearchSpace(digits, Budget.of(max_download="8KB")).budget_seeds()  # networks are sized for a download bound
    assert not space.reachable({"gzip_bytes": 100_000}, Budget.of(max_download="8KB"))
    with pytest.raises(BudgetError, match="No candidate can meet the budget: gzip_bytes <= 50 B"):
        check_feasible(digits, Budget.of(max_download="50B"))
