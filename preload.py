"""Command-line flags of the Tagger extension (read by the WebUI before it parses its arguments)."""


def preload(parser):
    parser.add_argument(
        "--tagger-models-dir",
        type=str,
        default=None,
        help="Tagger: folder of the WD14 tagger models (overrides the setting; default: models/tagger)",
    )
    parser.add_argument(
        "--tagger-device",
        type=str,
        default=None,
        help="Tagger: where the tagger models run: auto, cpu, cuda or cuda:N (overrides the setting)",
    )
