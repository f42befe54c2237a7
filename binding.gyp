{
  "targets": [
    {
      "target_name": "corematching_kernels",
      "sources": ["native/kernels.cc", "native/layer.cc", "native/attention.cc"],
      "cflags_cc": ["-O3", "-std=c++17", "-pthread", "-Wno-uninitialized", "-Wno-maybe-uninitialized", "-fopenmp-simd"],
      "ldflags": ["-pthread"],
      "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-O3", "-std=c++17"] }
    }
  ]
}
