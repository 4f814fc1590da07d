"""Settings are grouped by topic: each in exactly one, each still one flag and one variable."""

from __future__ import annotations

import argparse

from svcreg.settings import TOPICS, Settings, add_arguments


def test_every_setting_is_in_exactly_one_topic_and_help_shows_the_groups() -> None:
    named = [name for names in TOPICS.values() for name in names]
    assert sorted(named) == sorted(Settings.model_fields) and len(named) == len(set(named))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    titles = [group.title for group in parser._action_groups]
    assert all(topic in titles for topic in TOPICS)
    assert parser.parse_args(["--member-server-name", "svcreg.x.svc"]).member_server_name == "svcreg.x.svc"
