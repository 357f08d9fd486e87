"""`mount.motionfs STORE MOUNTPOINT [-o opt[=value],...]`: the helper mount(8) runs.

With it linked as /sbin/mount.motionfs, an /etc/fstab line such as

    /home/me/.local/share/motionfs  /home/me/Motion  motionfs  defaults,_netdev  0 0

mounts the drive at boot or with `mount /home/me/Motion`. Every option of
`motionfs mount` is an -o option (`cache_size=10G`, `index=DIR`,
`s3_endpoint=URL`, `meta=URL`, `allow_other`, `foreground`...); the words only fstab and
mount(8) act on (`defaults`, `_netdev`, `noauto`, `nofail`, `x-systemd.*`...)
are ignored. An unknown option is refused in one line, before anything is
touched.
"""

from __future__ import annotations

import sys

import click

from motionfs import cli

# -o options that take a value, with the `motionfs mount` option each becomes.
VALUED = {
    "index": "--index",
    "meta": "--meta",
    "s3_endpoint": "--s3-endpoint",
    "user": "--user",
    "cache_size": "--cache-size",
    "io_timeout": "--io-timeout",
    "snapdir": "--snapdir",
    "scratch_ttl": "--scratch-ttl",
}
FLAGS = {"allow_other": "--allow-other", "foreground": "--foreground"}
# Words that fstab, mount(8) or systemd act on; they mean nothing to the daemon.
IGNORED = {"defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser", "rw"}
IGNORED_PREFIXES = ("x-", "comment=")


def translate(spec: str, mountpoint: str, options: list[str]) -> list[str]:
    """The `motionfs mount` arguments for a mount(8) call; ValueError names a bad option."""
    args = ["mount", mountpoint, "--store", spec]
    for group in options:
        for word in filter(None, group.split(",")):
            name, eq, value = word.partition("=")
            key = name.replace("-", "_")
            if word in IGNORED or word.startswith(IGNORED_PREFIXES):
                continue
            if key in FLAGS and not eq:
                args.append(FLAGS[key])
            elif key in VALUED and eq:
                args += [VALUED[key], value]
            else:
                raise ValueError(f"unknown mount option {word!r}")
    return args


def main(argv: list[str] | None = None) -> None:
    """mount(8)'s calling convention: SPEC DIR [-sfnv] [-o options] [-t type]."""
    argv = list(sys.argv[1:] if argv is None else argv)
    positional: list[str] = []
    options: list[str] = []
    fake = False
    while argv:
        arg = argv.pop(0)
        if arg == "-o" and argv:
            options.append(argv.pop(0))
        elif arg.startswith("-o") and len(arg) > 2:
            options.append(arg[2:])
        elif arg == "-t" and argv:
            argv.pop(0)  # the type: motionfs, by the helper's own name
        elif arg.startswith("-") and len(arg) > 1 and set(arg[1:]) <= set("sfnvi"):
            fake = fake or "f" in arg  # -f: do everything but mount
        else:
            positional.append(arg)
    if len(positional) != 2:
        click.echo("usage: mount.motionfs STORE MOUNTPOINT [-o opt[=value],...]", err=True)
        sys.exit(1)
    try:
        args = translate(positional[0], positional[1], options)
    except ValueError as e:
        click.echo(f"mount.motionfs: {e}", err=True)
        sys.exit(1)
    if fake:
        return
    sys.argv = ["motionfs", *args]  # the daemon is started again with these arguments
    cli.main(args, prog_name="motionfs")
