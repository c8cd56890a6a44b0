"""Admission errors shared by the engines."""


class QueueFull(Exception):
    """The admission queue is at max_queue; maps to RESOURCE_EXHAUSTED."""


class Draining(Exception):
    """The engine is draining or closed and admits nothing new; maps to UNAVAILABLE."""
