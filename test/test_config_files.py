"""config/ and the README tell the truth about the node's parameters."""
from pathlib import Path

import yaml

from clip_dinoiser_ros.ros.parameters import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]


def test_config_lists_every_parameter_with_its_default_for_any_node_name():
    content = yaml.safe_load((ROOT / "config" / "clip_dinoiser.yaml").read_text())
    assert list(content) == ["/**"]  # so namespace:= and -r __ns:= keep it in force
    assert content["/**"]["ros__parameters"] == {spec.name: spec.default for spec in PARAMETERS}


def test_config_comments_say_what_the_parameter_table_says():
    """Each parameter's comment is its description, what it allows and when it applies, as the node declares them."""
    lines = (ROOT / "config" / "clip_dinoiser.yaml").read_text().splitlines()
    for spec in PARAMETERS:
        line = next(index for index, text in enumerate(lines) if text.strip().startswith(f"{spec.name}:"))
        assert lines[line - 1].strip() == f"# {spec.description}. Allowed: {spec.allowed()}. Applies: {spec.applies}."


def test_readme_documents_every_parameter_and_what_is_refused():
    readme = (ROOT / "README.md").read_text()
    missing = [spec.name for spec in PARAMETERS if f"`{spec.name}`" not in readme]
    assert not missing
    refused = readme[readme.index("### Refused values"):]
    assert all(spec.allowed() in refused for spec in PARAMETERS if spec.choices or spec.value_range or spec.rule)
