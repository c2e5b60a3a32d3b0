"""vlm3r-scene: save, load or reset the running node's scene memory.

    vlm3r-scene save ~/maps/kitchen.safetensors
    vlm3r-scene load ~/maps/kitchen.safetensors
    vlm3r-scene save            # to the node's scene_path parameter
    vlm3r-scene reset           # forget the scene (a new place)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from vlm3r_ros.tools.service_client import (
    EXIT_ERROR, EXIT_OK, add_common_args, call_once, report, to_jsonable, unavailable)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog='vlm3r-scene', description=__doc__.splitlines()[0])
    parser.add_argument('command', choices=('save', 'load', 'reset'))
    parser.add_argument('path', nargs='?', default='',
                        help="scene file (.safetensors; default: the node's scene_path)")
    add_common_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return 0 on success, 1 on an error, 2 when no node answers."""
    args = build_parser().parse_args(argv)
    from std_srvs.srv import Trigger

    from vlm3r_ros.srv import LoadScene, SaveScene
    srv_type, name = {'save': (SaveScene, 'save_scene'), 'load': (LoadScene, 'load_scene'),
                      'reset': (Trigger, 'reset_scene')}[args.command]
    service = f'{args.node.rstrip("/")}/{name}'
    # The node resolves the path on its machine; expand ~ here only for a local path.
    request = (Trigger.Request() if args.command == 'reset'
               else srv_type.Request(path=os.path.expanduser(args.path) if args.path else ''))
    try:
        response = call_once(srv_type, service, request, args.timeout)
    except TimeoutError as exc:
        print(f'error: {exc}')
        return EXIT_ERROR
    if response is None:
        return unavailable(service)
    if args.command == 'reset':  # std_srvs/Trigger: success and message only
        print(json.dumps(to_jsonable(response), indent=2) if args.json else response.message)
        return EXIT_OK if response.success else EXIT_ERROR
    return report(response, args.json, f'{response.path}: {response.message}')


if __name__ == '__main__':
    sys.exit(main())
