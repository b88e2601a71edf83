"""Media in and out, no model: PyAV reading and writing (`video`), still images (`imageio`), colour conversions
(`color`), MATLAB-exact bicubic (`resize`) and atomic output files (`atomic`)."""
