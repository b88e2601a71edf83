"""SRCNN itself: the network and its self-describing safetensors files (`srcnn`), and the shipped weights with their
CPU precision record (`weights`, package data)."""
