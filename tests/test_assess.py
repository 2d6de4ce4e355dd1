"""The rules after the model: three bands, languages the model does not cover, kinds that open tickets."""

from __future__ import annotations

import pytest

from mentiondesk.bot.classify.assess import Cues, Judge, primary_language
from mentiondesk.bot.config import ClassifierSettings


def judge(**rules: object) -> Judge:
    return Judge.covering(["en"], **{"threshold": 0.5, "triage_threshold": 0.3, **rules})


@pytest.mark.parametrize(
    ("score", "band", "kind"),
    [
        (0.95, "ticket", "complaint"),
        (0.5, "ticket", "complaint"),
        (0.49, "triage", "other"),
        (0.3, "triage", "other"),
        (0.29, "stored", "other"),
        (0.0, "stored", "other"),
    ],
)
def test_three_bands_by_score(score: float, band: str, kind: str) -> None:
    got = judge().assess("text", score)
    assert (got.band, got.kind) == (band, kind)
    assert (got.triage_reason is not None) == (band == "triage")


def test_equal_thresholds_leave_no_triage_band() -> None:
    assert judge(triage_threshold=0.5).assess("text", 0.49).band == "stored"


@pytest.mark.parametrize("language", ["de", "pt-BR", "JA"])
def test_a_language_the_model_does_not_cover_goes_to_triage_whatever_the_score(language: str) -> None:
    for score in (0.99, 0.01):
        got = judge().assess("text", score, Cues(language=language))
        assert got.band == "triage"
        assert got.triage_reason is not None and "does not cover (en)" in got.triage_reason


@pytest.mark.parametrize("language", ["en", "en-GB", "EN_us", None, ""])
def test_english_or_unknown_language_is_scored(language: str | None) -> None:
    assert judge().assess("text", 0.99, Cues(language=language)).band == "ticket"


def test_primary_language() -> None:
    assert [primary_language(c) for c in ("en-GB", " de ", "zh_Hant", None, " ")] == ["en", "de", "zh", None, None]


def test_thresholds_out_of_order_or_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be above the complaint threshold"):
        judge(triage_threshold=0.6)
    with pytest.raises(ValueError, match="tickets_for takes 'complaint' and 'question'"):
        judge(tickets_for=frozenset({"praise"}))


def test_from_settings_takes_what_the_config_leaves_out_from_the_model() -> None:
    meta = {"threshold": 0.4, "triage_threshold": 0.25, "languages": ["en", "fr"]}
    got = Judge.from_settings(ClassifierSettings(), meta)
    assert (got.threshold, got.triage_threshold, got.languages) == (0.4, 0.25, frozenset({"en", "fr"}))
    got = Judge.from_settings(ClassifierSettings(threshold=0.6, triage_threshold=0.5, tickets_for=("question",)), meta)
    assert (got.threshold, got.triage_threshold, got.tickets_for) == (0.6, 0.5, frozenset({"question"}))
    # A config threshold below the model's triage threshold: no triage band rather than an inverted one.
    assert Judge.from_settings(ClassifierSettings(threshold=0.2), meta).triage_threshold == 0.2
    assert Judge.from_settings(ClassifierSettings(), {"threshold": 0.4}).triage_threshold == 0.4
