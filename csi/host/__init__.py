"""The only code that touches the operating system: commands, mounts, loop devices."""
