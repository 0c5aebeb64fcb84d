"""The Gerrit Trigger plugin's GERRIT_* parameters (opslab.ci.parameters): names and
encodings as the contract documents them (section 4.1), and read back in a job."""

import base64
import json
import subprocess
from typing import Any

import pytest

from opslab.ci.events import Event, Malformed, parse_event
from opslab.ci.parameters import (
    GerritServer,
    Modes,
    ParameterError,
    build_parameters,
    read_parameters,
)
from tests.test_ci_events import (
    CHANGE_ID,
    DEV,
    REV,
    REV_ACCOUNT,
    change,
    comment_event,
    envelope,
    patchset,
)

SERVER = GerritServer("review", "gerrit.example.org", 29418, "ssh", "3.9.1",
                      "https://gerrit.example.org/")


def event_of(raw: dict[str, Any]) -> Event:
    event = parse_event(raw)
    assert not isinstance(event, Malformed), event
    return event


def test_comment_added_parameters_as_the_plugin_passes_them() -> None:
    raw = comment_event(text="Patch Set 1:\n\nrecheck",
                        approvals=[{"type": "Verified", "value": "1", "oldValue": "0"},
                                   {"type": "Code-Review", "value": "0"}])
    params = build_parameters(event_of(raw), SERVER)
    assert params["GERRIT_EVENT_TYPE"] == "comment-added"
    assert params["GERRIT_CHANGE_NUMBER"] == "42"
    assert params["GERRIT_PATCHSET_NUMBER"] == "1"
    assert params["GERRIT_PATCHSET_REVISION"] == REV
    assert params["GERRIT_REFSPEC"] == "refs/changes/42/42/1"
    assert params["GERRIT_PROJECT"] == "demo"
    assert params["GERRIT_BRANCH"] == "master"
    assert params["GERRIT_CHANGE_ID"] == CHANGE_ID
    assert params["GERRIT_TOPIC"] == ""  # missing: passed empty, as the plugin does
    assert params["GERRIT_CHANGE_URL"] == "http://gerrit/c/demo/+/42"
    assert params["GERRIT_CHANGE_SUBJECT"] == "Fix"  # PLAIN by default
    assert params["GERRIT_CHANGE_WIP_STATE"] == "false"
    assert params["GERRIT_CHANGE_PRIVATE_STATE"] == "false"
    # BASE64 (UTF-8, standard alphabet, padded) by default: contract section 0, item 3.
    assert params["GERRIT_EVENT_COMMENT_TEXT"] == "UGF0Y2ggU2V0IDE6CgpyZWNoZWNr"
    assert params["GERRIT_CHANGE_COMMIT_MESSAGE"] == base64.b64encode(
        f"Fix\n\nChange-Id: {CHANGE_ID}\n".encode()).decode()
    # Only approvals with an oldValue, as JSON: {"<Label>":{"value":..,"oldValue":..}},
    # its quotes escaped like every other value's.
    assert params["GERRIT_EVENT_UPDATED_APPROVALS"] == \
        '{\\"Verified\\":{\\"value\\":\\"1\\",\\"oldValue\\":\\"0\\"}}'
    assert json.loads(params["GERRIT_EVENT_UPDATED_APPROVALS"].replace('\\"', '"')) == {
        "Verified": {"value": "1", "oldValue": "0"}}
    assert read_parameters(params).updated_approvals == {"Verified": ("1", "0")}
    # Account trios, with escapeQuotes on: every " written \".
    assert params["GERRIT_EVENT_ACCOUNT"] == ""  # Rev has no e-mail: empty, not half
    assert params["GERRIT_EVENT_ACCOUNT_NAME"] == "Rev"
    assert params["GERRIT_EVENT_ACCOUNT_USERNAME"] == "rev"
    assert params["GERRIT_EVENT_ACCOUNT_EMAIL"] == ""
    assert params["GERRIT_CHANGE_OWNER"] == '\\"Dev\\" <dev@example.com>'
    assert params["GERRIT_PATCHSET_UPLOADER_USERNAME"] == "dev"
    assert (params["GERRIT_NAME"], params["GERRIT_HOST"], params["GERRIT_PORT"],
            params["GERRIT_SCHEME"], params["GERRIT_VERSION"]) == (
        "review", "gerrit.example.org", "29418", "ssh", "3.9.1")
    assert int(params["GERRIT_EVENT_HASH"]) in range(-(2**31), 2**31)
    assert "GERRIT_NEWREV" not in params
    assert "GERRIT_CHANGE_ABANDONER" not in params


def test_the_job_decodes_with_base64_d() -> None:
    """The contract's way to read it in a job: echo "$GERRIT_EVENT_COMMENT_TEXT" | base64 -d."""
    text = 'Patch Set 2: Code-Review+1\n\nrecheck — "ça marche" 🚀'
    params = build_parameters(event_of(comment_event(text=text)))
    decoded = subprocess.run(["sh", "-c", 'echo "$GERRIT_EVENT_COMMENT_TEXT" | base64 -d'],
                             env={"GERRIT_EVENT_COMMENT_TEXT":
                                  params["GERRIT_EVENT_COMMENT_TEXT"], "PATH": "/usr/bin:/bin"},
                             capture_output=True, check=True).stdout
    assert decoded.decode("utf-8") == text


def test_quotes_are_escaped_in_plain_values_only() -> None:
    raw = comment_event(text='say "recheck"')
    raw["change"]["subject"] = 'Fix "quoted" \\" thing'
    params = build_parameters(event_of(raw))
    assert params["GERRIT_CHANGE_SUBJECT"] == 'Fix \\"quoted\\" \\\\" thing'
    assert base64.b64decode(params["GERRIT_EVENT_COMMENT_TEXT"]).decode() == 'say "recheck"'
    unescaped = build_parameters(event_of(raw), modes=Modes(escape_quotes=False))
    assert unescaped["GERRIT_CHANGE_SUBJECT"] == 'Fix "quoted" \\" thing'


def test_modes_change_the_encodings() -> None:
    raw = comment_event(text="recheck")
    modes = Modes(comment_text="PLAIN", commit_message="NONE", change_subject="BASE64",
                  name_and_email="NONE")
    params = build_parameters(event_of(raw), modes=modes)
    assert params["GERRIT_EVENT_COMMENT_TEXT"] == "recheck"
    assert "GERRIT_CHANGE_COMMIT_MESSAGE" not in params
    assert params["GERRIT_CHANGE_SUBJECT"] == "Rml4"
    assert "GERRIT_CHANGE_OWNER" not in params
    assert params["GERRIT_CHANGE_OWNER_NAME"] == "Dev"
    with pytest.raises(ValueError, match="comment_text mode"):
        Modes(comment_text="HEX")  # type: ignore[arg-type]


def test_refspec_computed_when_the_event_has_no_ref() -> None:
    raw = comment_event()
    raw["change"]["number"] = 5
    del raw["patchSet"]["ref"]
    assert build_parameters(event_of(raw))["GERRIT_REFSPEC"] == "refs/changes/05/5/1"


def test_change_url_falls_back_to_the_front_end_url() -> None:
    raw = comment_event()
    raw["change"]["url"] = ""
    assert build_parameters(event_of(raw), SERVER)["GERRIT_CHANGE_URL"] == \
        "https://gerrit.example.org/42"
    assert build_parameters(event_of(raw))["GERRIT_CHANGE_URL"] == ""


def test_other_kinds_of_event() -> None:
    abandoned = build_parameters(event_of(envelope(
        "change-abandoned", change=change(), patchSet=patchset(), abandoner=DEV, reason="x")))
    assert abandoned["GERRIT_CHANGE_ABANDONER"] == '\\"Dev\\" <dev@example.com>'
    assert abandoned["GERRIT_CHANGE_ABANDONER_USERNAME"] == "dev"
    assert "GERRIT_EVENT_COMMENT_TEXT" not in abandoned
    merged = build_parameters(event_of(envelope(
        "change-merged", change=change(), patchSet=patchset(), submitter=REV_ACCOUNT,
        newRev="c" * 40)))
    assert merged["GERRIT_NEWREV"] == "c" * 40
    updated = build_parameters(event_of(envelope("ref-updated", submitter=DEV, refUpdate={
        "project": "demo", "refName": "refs/heads/master", "oldRev": "a" * 40,
        "newRev": "b" * 40})))
    assert {name: updated[name] for name in ("GERRIT_REFNAME", "GERRIT_PROJECT",
                                             "GERRIT_OLDREV", "GERRIT_NEWREV")} == {
        "GERRIT_REFNAME": "refs/heads/master", "GERRIT_PROJECT": "demo",
        "GERRIT_OLDREV": "a" * 40, "GERRIT_NEWREV": "b" * 40}
    assert "GERRIT_CHANGE_NUMBER" not in updated
    assert updated["GERRIT_EVENT_ACCOUNT_USERNAME"] == "dev"
    created = build_parameters(event_of(envelope(
        "patchset-created", change=change(wip=True, hashtags=["a", "b"], topic="t"),
        patchSet=patchset())))
    assert created["GERRIT_CHANGE_WIP_STATE"] == "true"
    assert created["GERRIT_HASHTAGS"] == "a,b"
    assert created["GERRIT_TOPIC"] == "t"
    # No top-level uploader (old 2.x): the patch set's uploader is the event's account.
    assert created["GERRIT_EVENT_ACCOUNT_USERNAME"] == "dev"


def test_each_event_has_its_own_hash_and_a_replay_the_same() -> None:
    first = build_parameters(event_of(comment_event()))["GERRIT_EVENT_HASH"]
    again = build_parameters(event_of(comment_event(2)))["GERRIT_EVENT_HASH"]
    other = build_parameters(event_of(comment_event(text="check infra")))["GERRIT_EVENT_HASH"]
    assert first == again != other


# -- reading them back in the job ------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
def test_round_trip(version: int) -> None:
    text = 'Patch Set 1:\n\nrecheck "now" ✓'
    raw = comment_event(version, text=text)
    raw["change"]["subject"] = 'Fix "the" bug ✓'
    params = build_parameters(event_of(raw), SERVER)
    job = read_parameters(params)
    assert (job.event_type, job.project, job.branch, job.change, job.patchset) == (
        "comment-added", "demo", "master", 42, 1)
    assert job.revision == REV
    assert job.refspec == "refs/changes/42/42/1"
    assert job.comment_text == text
    assert job.subject == 'Fix "the" bug ✓'
    assert job.commit_message == f"Fix\n\nChange-Id: {CHANGE_ID}\n"
    assert job.change_id == CHANGE_ID
    assert job.event_account == "rev"
    assert job.gerrit_host == "gerrit.example.org"
    assert job.event_hash == params["GERRIT_EVENT_HASH"]
    plain = Modes(comment_text="PLAIN", commit_message="NONE", escape_quotes=False)
    job = read_parameters(build_parameters(event_of(raw), modes=plain), plain)
    assert job.comment_text == text
    assert job.commit_message is None


def test_a_patchset_created_build_has_no_comment() -> None:
    params = build_parameters(event_of(envelope("patchset-created", change=change(),
                                                patchSet=patchset(number=2), uploader=DEV)))
    job = read_parameters(params)
    assert job.comment_text is None
    assert job.patchset == 2


def good() -> dict[str, str]:
    return build_parameters(event_of(comment_event()))


@pytest.mark.parametrize(("change", "message"), [
    ({"GERRIT_CHANGE_NUMBER": None}, "GERRIT_CHANGE_NUMBER is missing"),
    ({"GERRIT_CHANGE_NUMBER": ""}, "GERRIT_CHANGE_NUMBER is missing"),
    ({"GERRIT_CHANGE_NUMBER": "4x2"}, "GERRIT_CHANGE_NUMBER '4x2' is not a positive number"),
    ({"GERRIT_PATCHSET_NUMBER": "0"}, "GERRIT_PATCHSET_NUMBER '0' is not a positive number"),
    ({"GERRIT_PATCHSET_NUMBER": "-1"}, "is not a positive number"),
    ({"GERRIT_PATCHSET_REVISION": "HEAD"}, "GERRIT_PATCHSET_REVISION 'HEAD' is not a 40-hex"),
    ({"GERRIT_PROJECT": None}, "GERRIT_PROJECT is missing"),
    ({"GERRIT_BRANCH": None}, "GERRIT_BRANCH is missing"),
    ({"GERRIT_EVENT_TYPE": None}, "GERRIT_EVENT_TYPE is missing"),
    ({"GERRIT_REFSPEC": "refs/changes/42/42/2"}, "is not change 42, patch set 1"),
    ({"GERRIT_REFSPEC": "main; rm -rf /"}, "is not a ref"),
    ({"GERRIT_REFSPEC": "refs/heads/../../x"}, "is not a ref"),
    ({"GERRIT_EVENT_COMMENT_TEXT": "recheck!"}, "GERRIT_EVENT_COMMENT_TEXT is not base64"),
    ({"GERRIT_EVENT_COMMENT_TEXT": base64.b64encode(b"\xff\xfe").decode()},
     "is base64, but not of UTF-8 text"),
    ({"GERRIT_EVENT_COMMENT_TEXT": None}, "GERRIT_EVENT_COMMENT_TEXT is missing"),
    ({"GERRIT_CHANGE_COMMIT_MESSAGE": "Fix it"}, "GERRIT_CHANGE_COMMIT_MESSAGE is not base64"),
    ({"GERRIT_EVENT_UPDATED_APPROVALS": "{"}, "GERRIT_EVENT_UPDATED_APPROVALS is not"),
    ({"GERRIT_EVENT_UPDATED_APPROVALS": '{"Verified": 1}'},
     "GERRIT_EVENT_UPDATED_APPROVALS is not"),
    ({"GERRIT_EVENT_UPDATED_APPROVALS": '{"Verified": {"value": 1, "oldValue": 0}}'},
     "GERRIT_EVENT_UPDATED_APPROVALS is not"),
])
def test_bad_parameters_are_named(change: dict[str, str | None], message: str) -> None:
    params = good()
    for name, value in change.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    with pytest.raises(ParameterError) as error:
        read_parameters(params)
    assert message in str(error.value)


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ParameterError) as error:
        read_parameters({})
    for name in ("GERRIT_EVENT_TYPE", "GERRIT_PROJECT", "GERRIT_BRANCH", "GERRIT_CHANGE_NUMBER",
                 "GERRIT_PATCHSET_NUMBER", "GERRIT_PATCHSET_REVISION"):
        assert f"{name} is missing" in str(error.value)


def test_a_missing_refspec_is_computed() -> None:
    params = good()
    del params["GERRIT_REFSPEC"]
    assert read_parameters(params).refspec == "refs/changes/42/42/1"
