"""`radiogenomics sign BUNDLE --key KEY`: vouch for a bundle with an ed25519 signature."""

from __future__ import annotations

import argparse
from pathlib import Path

from RadioGenomicsLib.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sign", help="sign a model bundle (ed25519), or make a signing key",
        description="Check every file of BUNDLE against its manifest.json, then sign the "
                    "manifest with an ed25519 private key into BUNDLE/signature.json. "
                    "`predict` and `info` then say who signed it: the name of the matching "
                    "public key (NAME.pub) in the trusted-keys folder "
                    "(RADIOGENOMICS_TRUSTED_KEYS, default ~/.config/radiogenomics/"
                    "trusted_keys). `--generate-key KEY` writes a new key pair: KEY (keep it "
                    "private) and KEY.pub (copy it into the trusted-keys folders).")
    parser.add_argument("bundle", metavar="BUNDLE", nargs="?", help="model bundle folder")
    parser.add_argument("--key", metavar="KEY",
                        help="ed25519 private key (unencrypted PEM or OpenSSH)")
    parser.add_argument("--name", help="the signer's name recorded in signature.json "
                                       "(default: the key file's name); the name shown on "
                                       "checking is that of the trusted public key")
    parser.add_argument("--generate-key", metavar="KEY",
                        help="write a new key pair KEY and KEY.pub, and sign nothing")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from RadioGenomicsLib.integrity import (SIGNATURE_FILE, generate_key, key_fingerprint,
                                            sign_bundle)
    from RadioGenomicsLib.outputs import Output, check_outputs

    if args.generate_key:
        if args.bundle or args.key:
            raise InputError(None, "--generate-key makes a key and signs nothing: give it alone")
        check_outputs("sign", [Output(args.generate_key, "file", "--generate-key")])
        private, public = generate_key(args.generate_key)
        print(f"private key -> {private} (keep it secret); public key -> {public} (share it: "
              "put it in the trusted-keys folder of every site that should trust it)")
        return 0
    if not (args.bundle and args.key):
        raise InputError(None, "give BUNDLE and --key KEY (or --generate-key KEY)")
    check_outputs("sign", [Output(Path(args.bundle) / SIGNATURE_FILE, "file", "BUNDLE")],
                  [args.key])
    document = sign_bundle(args.bundle, args.key, args.name)
    print(f"signed {args.bundle} as {document['signer']} (key {document['key_fingerprint']})")
    return 0
