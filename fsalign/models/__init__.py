"""Neural network models: encoders, output heads and the small models of the synthetic experiments."""
