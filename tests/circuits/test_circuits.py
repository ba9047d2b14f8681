"""Every known-circuit spec in this folder, plus proof that a wrong head fails.

Each spec pins heads whose roles are known independently of the check: by tracr's
construction (tracr_*.toml), by the organisms' design and measured scores
(induction.toml, llama_arithmetic.toml), or by the literature (gpt2_ioi.toml, which
needs GPT-2 weights and skips here with the reason).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from headscope.circuits import assert_circuit, check, load_spec

HERE = Path(__file__).parent
SPECS = sorted(HERE.glob("*.toml"))


def _param(p: Path):
    raw = tomllib.loads(p.read_text())
    marks = [pytest.mark.needs_weights] if raw.get("needs_weights") else []
    if raw.get("known_failure"):  # a recorded finding: it must keep failing, or the record is stale
        marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=raw["known_failure"]))
    return pytest.param(p, id=p.stem, marks=marks)


def test_the_required_specs_are_here():
    names = {p.stem for p in SPECS}
    assert {"induction", "llama_arithmetic", "gpt2_ioi"} <= names
    assert len([n for n in names if n.startswith("tracr_")]) >= 3


@pytest.mark.parametrize("spec", [_param(p) for p in SPECS])
def test_circuit(spec):
    # pass/fail never reads the intervals; test_*_intervals_* below check them
    assert_circuit(spec, intervals=False)


def _wrong_head_spec(tmp_path: Path, src: str, old: str, new: str) -> Path:
    text = (HERE / src).read_text()
    assert text.count(old) >= 1, old
    out = tmp_path / f"wrong_{src}"
    out.write_text(text.replace(old, new, 1))
    return out


def test_wrong_head_fails_check_induction(tmp_path):
    # The induction spec's previous-token check with the wrong head: L0H1's previous-token
    # score is 0.07 against L0H0's 0.99, so it misses both the rank and the score bound.
    spec = tmp_path / "wrong_induction.toml"
    spec.write_text(
        'model = "induction"\nmethod = "head_score:previous_token"\n'
        'heads = [{ head = "L0H1", role = "previous-token head", expect = ["rank <= 1", "score >= 0.7"] },\n'
        '         { head = "L1H3", role = "induction head (not previous-token)", expect = ["score <= 0.3"] }]\n'
    )
    report = check(spec)
    assert not report.passed and report.status == "FAIL"
    bad = [h for c in report.checks for h in c.heads if not h.passed]
    assert [h.spec.label for h in bad] == ["L0H1"]
    assert bad[0].rank > 1 and bad[0].score < 0.7  # the measured numbers are reported
    assert "FAIL" in report.table() and "L0H1" in report.table()
    with pytest.raises(AssertionError, match="circuit drifted"):
        assert_circuit(spec)
    # the same heads in their real roles pass
    spec.write_text(spec.read_text().replace('"L0H1"', '"L0H0"'))
    assert check(spec).passed


def test_wrong_head_fails_check_tracr(tmp_path):
    # Swap the roles of the two shift heads: by construction each check then fails.
    text = (HERE / "tracr_shift2.toml").read_text()
    swapped = (
        text.replace('head = "L0H0"', 'head = "TMP"')
        .replace('head = "L0H1"', 'head = "L0H0"')
        .replace('head = "TMP"', 'head = "L0H1"')
    )
    spec = tmp_path / "swapped.toml"
    spec.write_text(swapped)
    report = check(spec)
    assert not report.passed
    assert all(not c.passed for c in report.checks)


def test_wrong_head_exits_1_through_the_cli(tmp_path, capsys):
    from headscope.cli import main

    good = HERE / "tracr_sort.toml"
    assert main(["circuits", "check", str(good)]) == 0
    wrong = _wrong_head_spec(
        tmp_path,
        "tracr_sort.toml",
        'head = "L1H0", role = "sort aggregate (moves',
        'head = "L0H0", role = "sort aggregate (moves',
    )
    capsys.readouterr()
    assert main(["circuits", "check", str(good), str(wrong)]) == 1
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" in out and "1 passed, 1 failed" in out


def test_specs_parse():
    for p in SPECS:
        spec = load_spec(p)
        assert spec.checks and all(c.heads for c in spec.checks)


@pytest.mark.parametrize("src", ["induction.toml", "llama_arith_heads.toml"])
def test_patching_intervals_recompute_the_sweep_score(src):
    # Each named head is patched alone with a hand-built Patch and its per-prompt logit
    # differences kept; the ratio of their means must equal the sweep engine's score, and
    # the 95% interval (BCa over prompts) must contain it; n is the prompt count.
    report = check(HERE / src)
    spec = load_spec(HERE / src)
    n_prompts = len(spec.checks[0].make_task())
    for c in report.checks:
        if c.check.method != "patching":
            continue
        for h in c.heads:
            assert h.ci is not None and h.ci.n == n_prompts
            assert h.ci.value == pytest.approx(h.score, abs=1e-4)
            assert h.ci.lo <= h.score <= h.ci.hi and h.ci.lo < h.ci.hi
            # placebo p over the heads the spec does not name: rank 1 among m others → 1/(m+1)
            m = c.scores.numel() - len({(x.spec.layer, x.spec.head) for x in c.heads})
            others_stronger = int((c.scores.abs() >= abs(h.score)).sum()) - sum(
                abs(x.score) >= abs(h.score) for x in c.heads
            )
            assert h.p == pytest.approx((1 + others_stronger) / (1 + m))
    d = report.to_dict()["checks"][0]["heads"][0]
    assert d["ci"]["n"] == n_prompts and 0 < d["p_placebo"] <= 1
    assert "95% CI" in report.table()


def test_attention_intervals_are_over_inputs():
    report = check(HERE / "induction.toml")
    hs = [c for c in report.checks if c.check.method == "head_score:induction"][0]
    for h in hs.heads:
        assert h.ci is not None and h.ci.n == 64
        assert h.ci.value == pytest.approx(h.score, abs=1e-5)  # mean of per-input scores = the score


def test_known_failure_must_say_why(tmp_path):
    from headscope.common.errors import HeadscopeError

    base = (
        'model = "induction"\nmethod = "head_score:previous_token"\n'
        'heads = [{ head = "L0H0", expect = ["rank <= 1"] }]\n'
    )
    (tmp_path / "ok.toml").write_text('known_failure = "L0H0 moved"\n' + base)
    assert load_spec(tmp_path / "ok.toml").known_failure == "L0H0 moved"
    (tmp_path / "bad.toml").write_text("known_failure = 3\n" + base)
    with pytest.raises(HeadscopeError, match="known_failure must be a non-empty string"):
        load_spec(tmp_path / "bad.toml")
