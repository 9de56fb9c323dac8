mod capture;
mod connect;
mod dns;
mod forward;
mod l7;
mod perf;
mod reload;
mod support;
