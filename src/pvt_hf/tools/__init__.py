"""The tools around the model: conversion, Hub folders, evaluation, metrics, FLOPs, ONNX export, composites,
sharding, visualization, the demo. Never shipped as Hub remote code (the model is the flat modules one level up)."""
