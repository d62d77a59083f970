"""Model organisms: small models trained by the project so analyzers have ground truth to stand on."""
