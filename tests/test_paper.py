"""isp_support.paper: the paper's settings by config field, and a run's departures from them."""

from __future__ import annotations

import copy

import pytest

from isp_support import paper
from isp_support.config import Config, config_from_dict, profile_config


def _paper_config() -> dict:
    """A config dict whose every field of :data:`paper.SETTINGS` holds the paper's value."""
    config = Config().to_dict()
    for field, value in paper.SETTINGS.items():
        *path, last = field.split(".")
        node = config
        for part in path:
            node = node[part]
        node[last] = value
    return config


def test_every_setting_is_a_real_config_field_with_a_label():
    config = Config().to_dict()
    for field in paper.SETTINGS:
        paper.lookup(config, field)  # raises KeyError for a field the config does not have
    assert set(paper.NOTES) == set(paper.SETTINGS)
    assert all(note.label for note in paper.NOTES.values())


def test_the_papers_values_make_a_valid_config():
    config_from_dict(_paper_config())  # every value is of its field's type and allowed


def test_a_config_equal_to_the_paper_departs_nowhere():
    assert paper.departures(_paper_config()) == []


def test_lists_from_run_json_equal_the_papers_tuples():
    config = _paper_config()
    config["preprocess"]["wb_gains"] = [1, 1, 1]  # as JSON reads it back
    assert paper.departures(config) == []


@pytest.mark.parametrize("field, value", [("train.lr", 1e-3), ("embed.semantic_backbone", "vgg16_offline"),
                                          ("train.ema", 0.98), ("match.image_epsilon", 0.2),
                                          ("preprocess.wb_gains", (2.0, 1.0, 1.5))])
def test_a_changed_field_shows_up_with_both_values(field, value):
    config = copy.deepcopy(_paper_config())
    section, name = field.split(".")
    config[section][name] = value
    rows = paper.departures(config)
    assert [r.field for r in rows] == [field]
    assert rows[0].paper == paper.SETTINGS[field] and rows[0].run == value
    shown = rows[0].display()
    assert shown["setting"] == paper.NOTES[field].label and shown["this run"] == paper.show_value(value)


def test_the_demo_profile_departs_where_the_readme_says():
    fields = {r.field for r in paper.departures(profile_config("demo").to_dict())}
    assert {"dataset.raw_patch", "embed.semantic_backbone", "embed.style_backbone", "train.lr", "train.epochs",
            "train.batch_size", "train.ema", "train.schedule", "stage2.d_lr", "embed.cast",
            "match.image_epsilon"} <= fields
    assert "train.chroma" not in fields


def test_a_missing_field_is_named():
    config = Config().to_dict()
    del config["train"]["lr"]
    with pytest.raises(KeyError, match="train.lr"):
        paper.departures(config)


def test_values_are_readable():
    assert paper.show_value(1e-4) == "1e-4" and paper.show_value(2e-5) == "2e-5"
    assert paper.show_value(0.05) == "0.05" and paper.show_value((1.0, 1.0, 1.0)) == "(1, 1, 1)"
    assert paper.show_value(None, "whole patches") == "whole patches"
    assert paper.show_value(("relu1_2", "relu2_2")) == "relu1_2, relu2_2"


def test_values_holds_every_number_of_settings_and_results():
    numbers = paper.values()
    assert 1e-4 in numbers and 22.569 in numbers and 256.0 in numbers
    assert all(isinstance(v, float) for v in numbers)
