// Programmatic dependent launch: whether the decode-path kernels may start before the kernel ahead
// of them in the stream has finished.
//
// On Hopper (sm_90+) a kernel launched with programmatic stream serialization is scheduled as soon
// as every block of its predecessor has signalled `griddepcontrol.launch_dependents` (our kernels
// do so on entry) and resources allow. It then runs its prologue, which touches only data no kernel
// of the step writes (packed weights, scales, norm weights), and waits in `griddepcontrol.wait`
// until the predecessor has completed and its writes are visible; everything that reads an
// activation or writes anything comes after that wait. A decode step is hundreds of kernels of a
// few microseconds each, so hiding each one's launch latency and first weight fetch behind the
// previous kernel's tail is a large share of the step (docs/KERNELS.md, "Dependent launch").
//
// Every kernel launched this way waits before it completes, so completion stays transitive along
// the stream: a kernel past its wait sees the writes of every earlier kernel, not just the last.
// Kernels launched the ordinary way (cuBLAS, copies, the prefill kernels) keep full serialization.
//
// On by default where the device supports it; off in one process for A/B measurements
// (`bitloom bench --dependent_launch=false`) or with BITLOOM_DEPENDENT_LAUNCH=0 in the environment.
// The setting is read when a kernel is enqueued, so a captured CUDA graph keeps the mode it was
// captured with.
#pragma once

namespace bitloom::kernels::cuda {

// Process-wide switch; thread-safe. Has no effect on devices below sm_90.
void SetDependentLaunch(bool enabled);
// The switch's state (true unless turned off by SetDependentLaunch or the environment).
bool DependentLaunchEnabled();

}  // namespace bitloom::kernels::cuda
