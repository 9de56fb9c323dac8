mod capture;
mod connect;
mod dns;
mod forward;
mod perf;
mod reload;
mod support;
