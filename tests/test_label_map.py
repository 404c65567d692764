import pytest

from utils.common import config
from utils.common.label_map import LabelMapError, class_names, parse_label_map, read_label_map, write_label_map


def test_write_read_round_trip(tmp_path):
    names = ["myleft", "myright", "yourleft", "yourright"]
    path = tmp_path / "map.pbtxt"
    write_label_map(path, names)
    assert read_label_map(path) == {1: "myleft", 2: "myright", 3: "yourleft", 4: "yourright"}
    assert class_names(read_label_map(path)) == names
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_committed_label_map_is_one_hand_class():
    assert read_label_map(config.LABEL_MAP_PATH) == {1: "hand"}


def test_parses_the_object_detection_api_variants():
    text = '# comment\nitem {\n  name: "hand"\n  id: 1\n  display_name: "Hand"\n}\nitem { id: 2 name: \'face\' }\n'
    assert parse_label_map(text) == {1: "hand", 2: "face"}


@pytest.mark.parametrize("text, problem", [
    ("", "no 'item"),
    ("item { name: 'hand' }", "without id"),
    ("item { id: x name: 'hand' }", "not an integer"),
    ("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", "repeated"),
    ("item { id: 0 name: 'a' }", "not positive"),
])
def test_malformed_label_maps_are_refused(text, problem):
    with pytest.raises(LabelMapError, match=problem):
        parse_label_map(text, source="x.pbtxt")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(LabelMapError, match="missing.pbtxt"):
        read_label_map(tmp_path / "missing.pbtxt")
