"""vlm3r-ask: ask the running node a spatial question and print the answer.

    vlm3r-ask "How many chairs are in this room?"
    vlm3r-ask "Which is closer to the sofa?" -o "the tv" -o "the lamp" --json
"""
from __future__ import annotations

import argparse
import math
import sys

from vlm3r_ros.tools.service_client import (
    EXIT_ERROR, add_common_args, call_once, report, unavailable)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog='vlm3r-ask', description=__doc__.splitlines()[0])
    parser.add_argument('question', help='the question in natural language')
    parser.add_argument('-o', '--option', action='append', default=[], dest='options',
                        help='a multiple-choice option (repeat for each)')
    parser.add_argument('--type', default='auto', choices=('auto', 'text', 'number', 'option'),
                        help='answer-type hint (default: auto)')
    parser.add_argument('--budget', type=int, default=0,
                        help='keyframe budget (default: the node parameter)')
    add_common_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return 0 on an answer, 1 on an error code, 2 when no node answers."""
    args = build_parser().parse_args(argv)
    from vlm3r_ros.srv import SpatialQuery
    request = SpatialQuery.Request(question=args.question, options=args.options,
                                   answer_type=args.type, keyframe_budget=args.budget)
    service = f'{args.node.rstrip("/")}/spatial_query'
    try:
        response = call_once(SpatialQuery, service, request, args.timeout)
    except TimeoutError as exc:
        print(f'error: {exc}')
        return EXIT_ERROR
    if response is None:
        return unavailable(service)
    text = response.answer
    if response.option_index >= 0:
        text += f'  (option {chr(65 + response.option_index)}: ' \
                f'{args.options[response.option_index]})'
    elif not math.isnan(response.value):
        text += f'  (value {response.value:g})'
    text += f'\n[{len(response.keyframe_stamps)} keyframes, coverage ' \
            f'{response.coverage:.2f}, {response.elapsed_s:.2f} s]'
    return report(response, args.json, text)


if __name__ == '__main__':
    sys.exit(main())
