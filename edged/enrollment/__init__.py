"""Enrollment: the faces of the people a camera actually sees, kept on the device.

`names` checks what becomes a folder name (a person, an expression); `store` keeps the
prepared face crops (``<store>/<person>/<expression>/<sha256>.png``), all or nothing,
0700/0600, one writer at a time. ``edged enroll`` (`edged.commands.enroll`) fills it;
the ``enrolled`` dataset layout (`edged.training.datasets`) reads it for training.
"""
