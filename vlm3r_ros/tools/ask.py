"""vlm3r-ask: ask the running node a spatial question and print the answer.

    vlm3r-ask "How many chairs are in this room?"
    vlm3r-ask "Which is closer to the sofa?" -o "the tv" -o "the lamp" --json
    vlm3r-ask "Describe the room." --stream    # prints the answer as it is generated
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from vlm3r_ros.tools.service_client import (
    EXIT_ERROR, add_common_args, call_once, report, run_action_once, unavailable)


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
    parser.add_argument('--stream', action='store_true',
                        help='use the ~/spatial_query_action action and print the answer '
                             'token by token as it is generated (Ctrl-C cancels)')
    add_common_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return 0 on an answer, 1 on an error code, 2 when no node answers."""
    args = build_parser().parse_args(argv)
    from vlm3r_ros.srv import SpatialQuery
    request = SpatialQuery.Request(question=args.question, options=args.options,
                                   answer_type=args.type, keyframe_budget=args.budget)
    service = f'{args.node.rstrip("/")}/spatial_query'
    streamed = False
    try:
        if args.stream:
            response, streamed = _ask_streaming(args, request)
            service += '_action'
        else:
            response = call_once(SpatialQuery, service, request, args.timeout)
    except TimeoutError as exc:
        print(f'error: {exc}')
        return EXIT_ERROR
    if response is None:
        return unavailable(service)
    text = '' if streamed else response.answer
    if streamed and not response.success:
        print()  # the error goes on its own line after the partial answer
    if response.option_index >= 0:
        text += f'  (option {chr(65 + response.option_index)}: ' \
                f'{args.options[response.option_index]})'
    elif not math.isnan(response.value):
        text += f'  (value {response.value:g})'
    text += f'\n[{len(response.keyframe_stamps)} keyframes, coverage ' \
            f'{response.coverage:.2f}, {response.elapsed_s:.2f} s]'
    return report(response, args.json, text)


def _ask_streaming(args: argparse.Namespace, request: Any) -> tuple[Any, bool]:
    """Ask through the action; print answer pieces as they arrive (unless --json).

    Returns (result, whether text was printed). The result has the service's fields.
    """
    from vlm3r_ros.action import SpatialQuery as SpatialQueryAction
    goal = SpatialQueryAction.Goal(question=request.question, options=request.options,
                                   answer_type=request.answer_type,
                                   keyframe_budget=request.keyframe_budget)
    printed = []

    def on_feedback(feedback: Any) -> None:
        if feedback.text and not args.json:
            sys.stdout.write(feedback.text)
            sys.stdout.flush()
            printed.append(feedback.text)

    name = f'{args.node.rstrip("/")}/spatial_query_action'
    result = run_action_once(SpatialQueryAction, name, goal, args.timeout, on_feedback)
    shown = ''.join(printed)
    if result is not None and printed and result.answer.startswith(shown):
        # A piece that arrived after the result is dropped by rclpy: print the tail from it.
        sys.stdout.write(result.answer[len(shown):])
    return result, bool(printed)


if __name__ == '__main__':
    sys.exit(main())
