"""The rules after the model: three bands, languages the model does not cover, kinds that open tickets, questions,
priority from cues, categories."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from mentiondesk.bot.classify.assess import Cues, Judge, primary_language
from mentiondesk.bot.classify.cues import Categories
from mentiondesk.bot.config import ClassifierSettings, ConfigError, parse_settings
from mentiondesk.bot.cue_settings import (
    DEFAULT_CATEGORIES,
    DEFAULT_WORD_GROUPS,
    CategoryRule,
    PrioritySettings,
    WordGroup,
)


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


# --- questions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "@shop how do I change the delivery address on my order",
        "@shop Can you tell me when the new range is in stores?",
        "@shop is there a student discount",
        "Hi @shop, does the blue one come in a size 12? Thanks!",
        "@shop When will the app support dark mode? 🙏",
        "@shop where is the nearest store to Leeds?",
        "@shop Do you have the square cash app for the UK too?!?",
    ],
)
def test_a_question_below_the_complaint_threshold_is_a_question(text: str) -> None:
    assert judge().assess(text, 0.1).kind == "question"


@pytest.mark.parametrize(
    "text",
    [
        "@shop why is my order STILL not here?!",
        "@shop how hard is it to deliver a parcel on time?",
        "@shop seriously? third time this week",
        "@shop is this a joke? still not delivered",
        "@shop thanks, the parcel arrived today",
        "@shop love the new store https://example.com/why?",
    ],
)
def test_rhetorical_questions_and_statements_are_not_questions(text: str) -> None:
    assert judge().assess(text, 0.1).kind == "other"


def test_complaint_wins_over_question_when_the_score_says_complaint() -> None:
    got = judge(tickets_for=frozenset({"complaint", "question"})).assess("@shop where is my refund?", 0.7)
    assert (got.kind, got.band) == ("complaint", "ticket")


def test_a_question_opens_a_ticket_only_when_tickets_for_names_it() -> None:
    text = "@shop can I pay by bank transfer?"
    asked = judge(tickets_for=frozenset({"complaint", "question"})).assess(text, 0.1)
    assert (asked.kind, asked.band, asked.priority, asked.priority_reasons) == ("question", "ticket", "low", ())
    assert judge().assess(text, 0.1).band == "stored"
    # Not ticketed as a question, but borderline as a complaint: a person still decides.
    assert judge().assess(text, 0.4).band == "triage"


def test_question_priority_comes_from_the_config() -> None:
    rules = PrioritySettings(question="normal")
    got = judge(tickets_for=frozenset({"question"}), priority_settings=rules).assess("@shop is there a sale?", 0.1)
    assert got.priority == "normal"


# --- priority ----------------------------------------------------------------------------------------------------


def test_no_cue_leaves_the_kinds_default_priority() -> None:
    got = judge().assess("@shop my parcel is late", 0.6, Cues(followers=50, reblogs=0, favourites=1))
    assert (got.priority, got.priority_reasons) == ("normal", ())


@pytest.mark.parametrize(
    ("text", "priority", "reason"),
    [
        ("@shop the charger caught FIRE on my desk", "urgent", "safety words: fire"),
        (
            "@shop my account was hacked and someone logged into it",
            "urgent",
            "security words: hacked, someone logged into",
        ),
        ("@shop I'm talking to my lawyer about this", "urgent", "legal words: lawyer"),
        ("@shop the app is down and my card isn’t working", "high", "outage words: is down, isn't working"),
        ("@shop your site crashed again", "high", "outage words: crash*"),
    ],
)
def test_words_give_their_groups_level(text: str, priority: str, reason: str) -> None:
    got = judge().assess(text, 0.6)
    assert (got.priority, got.priority_reasons) == (priority, (reason,))


@pytest.mark.parametrize(
    "text",
    ["@shop you let me down", "@shop the download page is slow", "@shop thanks @fire_dept", "@shop it's a courtesy"],
)
def test_words_match_whole_words_only(text: str) -> None:
    assert judge().assess(text, 0.6).priority == "normal"


@pytest.mark.parametrize(
    ("cues", "reason"),
    [
        (Cues(followers=12_400), "12,400 followers"),
        (Cues(reblogs=20), "20 reblogs"),
        (Cues(favourites=75), "75 favourites"),
        (Cues(recent_tickets=2), "3rd ticket in 30 days"),
    ],
)
def test_each_number_cue_makes_a_post_high(cues: Cues, reason: str) -> None:
    got = judge().assess("@shop my parcel is late", 0.6, cues)
    assert (got.priority, got.priority_reasons) == ("high", (reason,))


def test_number_cues_below_their_thresholds_or_unknown_or_turned_off_give_nothing() -> None:
    below = Cues(followers=9_999, reblogs=19, favourites=49, recent_tickets=1)
    assert judge().assess("late parcel", 0.6, below).priority == "normal"
    assert judge().assess("late parcel", 0.6, Cues()).priority == "normal"
    off = PrioritySettings(followers_high=0, reblogs_high=0, favourites_high=0, repeat_tickets=0)
    huge = Cues(followers=10**6, reblogs=10**4, favourites=10**4, recent_tickets=9)
    assert judge(priority_settings=off).assess("late parcel", 0.6, huge).priority == "normal"


def test_a_confident_complaint_is_high_but_confidence_alone_never_makes_urgent() -> None:
    got = judge().assess("@shop late parcel", 0.95, Cues(followers=20_000))
    assert (got.priority, got.priority_reasons) == ("high", ("20,000 followers", "complaint score 0.95"))


def test_two_different_high_cues_make_urgent_and_say_so() -> None:
    got = judge().assess("@shop the app is down and not working", 0.6, Cues(followers=12_400, recent_tickets=3))
    assert got.priority == "urgent"
    assert got.priority_reasons == (
        "3 high cues together",
        "outage words: is down, not working",
        "12,400 followers",
        "4th ticket in 30 days",
    )


def test_reach_counts_once_however_many_of_its_numbers_are_high() -> None:
    got = judge().assess("@shop late parcel", 0.6, Cues(followers=50_000, reblogs=100, favourites=500))
    assert got.priority == "high"
    assert len(got.priority_reasons) == 3


def test_escalation_can_be_turned_off_or_made_stricter() -> None:
    text, cues = "@shop the app is down", Cues(followers=12_400)
    assert judge(priority_settings=PrioritySettings(high_cues_for_urgent=0)).assess(text, 0.6, cues).priority == "high"
    assert judge(priority_settings=PrioritySettings(high_cues_for_urgent=3)).assess(text, 0.6, cues).priority == "high"


def test_written_word_groups_replace_the_defaults_and_low_words_lower_a_post() -> None:
    rules = PrioritySettings(
        words=(WordGroup(name="no rush", level="low", words=("no rush", "whenever")),),
    )
    j = judge(priority_settings=rules)
    assert j.assess("@shop no rush, but the app is down", 0.6).priority_reasons == ("no rush words: no rush",)
    assert j.assess("@shop no rush, but the app is down", 0.6).priority == "low"
    # A low word does not outrank a high cue: the highest level wins.
    assert j.assess("@shop whenever you can", 0.6, Cues(followers=10**5)).priority == "high"


# --- categories --------------------------------------------------------------------------------------------------


def test_default_categories_tag_a_post_in_rule_order() -> None:
    got = judge().assess("@shop I was charged twice and the parcel never arrived", 0.8)
    assert got.categories == ("delivery", "billing")
    assert judge().assess("@shop lovely weather", 0.1).categories == ()


def test_written_categories_replace_the_defaults() -> None:
    j = judge(categories=Categories((CategoryRule(name="stores", keywords=("store", "branch")),)))
    assert j.assess("@shop the Leeds branch lost my parcel", 0.8).categories == ("stores",)


def test_from_settings_reads_priority_and_categories() -> None:
    settings = ClassifierSettings(
        priority=PrioritySettings(followers_high=100),
        categories=(CategoryRule(name="app", keywords=("app",)),),
    )
    got = Judge.from_settings(settings, {"threshold": 0.5}).assess("@shop the app", 0.6, Cues(followers=100))
    assert (got.priority, got.categories) == ("high", ("app",))


# --- config --------------------------------------------------------------------------------------------------


MINIMAL = '[mastodon]\nbase_url = "https://social.example"\n[slack]\ndefault_channel = "#support"\n'


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[[classifier.priority.words]]\nname = "x"\nlevel = "critical"\nwords = ["a"]\n',
            "classifier.priority.words.level (item 1): unknown level 'critical': a priority is one of urgent, high",
        ),
        (
            '[[classifier.priority.words]]\nname = "x"\nlevel = "high"\nwords = ["a", " "]\n',
            "classifier.priority.words.words (item 1): word 2 is empty",
        ),
        (
            '[[classifier.priority.words]]\nname = "x"\nlevel = "high"\nwords = []\n',
            "classifier.priority.words.words (item 1): must list at least one word",
        ),
        (
            '[[classifier.priority.words]]\nname = "x"\nlevel = "high"\nwords = ["(a|b)"]\n',
            "classifier.priority.words.words (item 1): word 1 ('(a|b)') is not a word or phrase",
        ),
        ("[classifier.priority]\nfollowers_high = -1\n", "classifier.priority.followers_high: must be greater than"),
        ("[classifier.priority]\nrepeat_tickets = -2\n", "classifier.priority.repeat_tickets: must be greater than"),
        ("[classifier.priority]\nhigh_cues_for_urgent = 1\n", "classifier.priority.high_cues_for_urgent: 1 would"),
        ('[classifier.priority]\nquestion = "soon"\n', "classifier.priority.question: unknown level 'soon'"),
        ("[classifier.priority]\nfolowers_high = 5\n", "classifier.priority.folowers_high: unknown key"),
        (
            '[[classifier.categories]]\nname = "a"\nkeywords = ["x"]\n[[classifier.categories]]\nname = "A"\n'
            'keywords = ["y"]\n',
            "classifier.categories: two categories are named 'A'",
        ),
        ('[[classifier.categories]]\nname = " "\nkeywords = ["x"]\n', "classifier.categories.name (item 1): must not"),
    ],
)
def test_bad_priority_or_category_config_names_the_key(toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(tomllib.loads(MINIMAL + toml), source="c.toml")
    assert expected in str(info.value)


def test_config_words_are_tidied_and_match_across_spacing() -> None:
    toml = '[[classifier.priority.words]]\nname = "billing"\nlevel = "high"\nwords = ["  double   charged "]\n'
    settings = parse_settings(tomllib.loads(MINIMAL + toml), source="c.toml").classifier
    assert settings.priority.words is not None and settings.priority.words[0].words == ("double charged",)
    got = Judge.from_settings(settings, {"threshold": 0.5}).assess("I was double\ncharged", 0.6)
    assert got.priority_reasons == ("billing words: double charged",)


def test_the_example_config_documents_the_built_in_lists_exactly() -> None:
    example = (Path(__file__).parent.parent / "config.example.toml").read_text(encoding="utf-8")
    section = example[example.index("[classifier]") : example.index("[tickets]")]
    # Uncomment every key, table header and continuation line of the [classifier] part.
    toml = "\n".join(line[2:] if re.match(r"# (\[\[|\w+ = |\s+\")", line) else line for line in section.splitlines())
    settings = parse_settings(tomllib.loads(MINIMAL + toml), source="example").classifier
    assert settings.categories == DEFAULT_CATEGORIES
    assert settings.priority == PrioritySettings(words=DEFAULT_WORD_GROUPS)
