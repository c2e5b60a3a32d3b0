"""vlm3r-plan: ask the running node for a route to a described goal.

    vlm3r-plan "the fridge"
    vlm3r-plan "the toilet" --start "the bed facing the tv" --json
"""
from __future__ import annotations

import argparse
import sys

from vlm3r_ros.tools.service_client import (
    EXIT_ERROR, add_common_args, call_once, report, unavailable)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog='vlm3r-plan', description=__doc__.splitlines()[0])
    parser.add_argument('goal', help='the goal in natural language')
    parser.add_argument('--start', default='', help='start description (default: current pose)')
    add_common_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return 0 on a route, 1 on an error code, 2 when no node answers."""
    args = build_parser().parse_args(argv)
    from vlm3r_ros.srv import PlanRoute
    service = f'{args.node.rstrip("/")}/plan_route'
    try:
        response = call_once(PlanRoute, service,
                             PlanRoute.Request(goal=args.goal, start=args.start), args.timeout)
    except TimeoutError as exc:
        print(f'error: {exc}')
        return EXIT_ERROR
    if response is None:
        return unavailable(service)
    lines = [f'{i + 1}. {step}' for i, step in enumerate(response.steps)]
    lines.append(f'path: {len(response.path.poses)} poses in {response.path.header.frame_id}, '
                 f'{response.length_m:.2f} m')
    if response.model_steps:
        lines.append('model: ' + '; '.join(response.model_steps))
    return report(response, args.json, '\n'.join(lines))


if __name__ == '__main__':
    sys.exit(main())
