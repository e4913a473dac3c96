"""KServe V2 REST (the Open Inference Protocol over HTTP/1.1), Triton's binary-data extension included."""
