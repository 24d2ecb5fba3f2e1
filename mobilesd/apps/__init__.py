"""Host drivers of the app clients: `mobilesd app android|ios|web` runs a client's own pipeline on this machine.

Each client (android_app/ Java core on the desktop JVM, ios_app/ Swift CLI in the Linux chroot, web_app/ page
in headless Chromium) is built if needed and run with the same flags as `mobilesd generate`, so one test can
compare all four implementations on the same bundle and seed. A module per client exposes ``add_arguments``
(its own flags) and ``run(args) -> int``.
"""

CLIENTS = {"android": "android", "ios": "ios", "web": "web"}
