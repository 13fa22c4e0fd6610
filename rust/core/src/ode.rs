//! ODE integration (Dormand–Prince 5(4)). Placeholder.
