"""config/ and launch/ tell the truth about the node's parameters."""
import ast
from pathlib import Path

import yaml

from clip_dinoiser_ros.ros.parameters import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]


def test_config_lists_every_parameter_with_its_default():
    content = yaml.safe_load((ROOT / "config" / "clip_dinoiser.yaml").read_text())
    values = content["clip_dinoiser"]["ros__parameters"]
    assert values == {spec.name: spec.default for spec in PARAMETERS}


def test_readme_documents_every_parameter():
    readme = (ROOT / "README.md").read_text()
    missing = [spec.name for spec in PARAMETERS if f"`{spec.name}`" not in readme]
    assert not missing


def test_launch_file_declares_its_arguments_and_runs_the_console_script():
    tree = ast.parse((ROOT / "launch" / "clip_dinoiser.launch.py").read_text())
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert {"params_file", "image_topics", "prompts", "namespace", "clip_dinoiser_node", "clip_dinoiser"} <= strings
