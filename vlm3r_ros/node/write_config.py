"""Write config/vlm3r.yaml from the parameter table (keeps the file and the code in step).

    python -m vlm3r_ros.node.write_config > config/vlm3r.yaml
"""
from __future__ import annotations

import textwrap

from vlm3r_ros.node.params import SPECS


def _yaml_value(value: object) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return f"'{value}'"
    return repr(value)


def render() -> str:
    """Return the YAML text: every parameter with its description and default."""
    lines = ['# vlm3r_node parameters with their defaults. Generated from',
             '# vlm3r_ros/node/params.py by `python -m vlm3r_ros.node.write_config`;',
             "# ranges and descriptions are also shown by 'ros2 param describe'.",
             'vlm3r_node:', '  ros__parameters:']
    for spec in SPECS:
        desc = spec.description + (' [' + ' | '.join(spec.choices) + ']' if spec.choices else '')
        if spec.low is not None:
            desc += f' Range {spec.low:g}..{spec.high:g}.'
        lines += [f'    # {line}' for line in textwrap.wrap(desc, 88)]
        lines.append(f'    {spec.name}: {_yaml_value(spec.default)}')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    print(render(), end='')
