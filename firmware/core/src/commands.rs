//! Command dispatch: handlers registered by name, and a bounded memory of answered command
//! ids. The server delivers a command again after every reconnect until it has the answer, so
//! an answer lost with a dropped connection is sent again from memory, without running the
//! handler twice (a `reboot` must not reboot twice).

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};

/// What a handler returns: `Ok(output)` or `Err(reason)`, sent as `ok: false` with
/// `{"error": reason}`.
pub type HandlerResult = Result<Value, String>;

/// A command handler. `Send` so a device can move between threads or tasks.
pub type Handler = Box<dyn FnMut(&Value) -> HandlerResult + Send>;

/// The answer to one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub ok: bool,
    pub output: Value,
}

/// How an answer came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A handler ran.
    Ran,
    /// No handler has this name.
    Unknown,
    /// Answered before: the remembered answer, nothing ran.
    Replayed,
}

pub struct Dispatcher {
    handlers: HashMap<String, Handler>,
    answered: HashMap<String, Answer>,
    order: VecDeque<String>,
    remember: usize,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.handlers.keys().collect();
        names.sort();
        f.debug_struct("Dispatcher")
            .field("handlers", &names)
            .field("answered", &self.order.len())
            .finish()
    }
}

impl Dispatcher {
    /// Remembers the answers to the last `remember` commands (at least 1).
    pub fn new(remember: usize) -> Self {
        Self {
            handlers: HashMap::new(),
            answered: HashMap::new(),
            order: VecDeque::new(),
            remember: remember.max(1),
        }
    }

    /// Registers (or replaces) the handler for `name`.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        handler: impl FnMut(&Value) -> HandlerResult + Send + 'static,
    ) {
        self.handlers.insert(name.into(), Box::new(handler));
    }

    /// Answers command `id`: from memory if answered before, else by its handler.
    pub fn dispatch(&mut self, id: &str, name: &str, args: &Value) -> (Answer, Outcome) {
        if let Some(answer) = self.answered.get(id) {
            return (answer.clone(), Outcome::Replayed);
        }
        let (answer, outcome) = match self.handlers.get_mut(name) {
            Some(handler) => match handler(args) {
                Ok(output) => (Answer { ok: true, output }, Outcome::Ran),
                Err(reason) => (
                    Answer {
                        ok: false,
                        output: json!({ "error": reason }),
                    },
                    Outcome::Ran,
                ),
            },
            None => (
                Answer {
                    ok: false,
                    output: json!({ "error": format!("unknown command: {name}") }),
                },
                Outcome::Unknown,
            ),
        };
        self.remember_answer(id, &answer);
        (answer, outcome)
    }

    fn remember_answer(&mut self, id: &str, answer: &Answer) {
        while self.order.len() >= self.remember {
            if let Some(old) = self.order.pop_front() {
                self.answered.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.answered.insert(id.to_owned(), answer.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_run_once_per_id_and_unknown_names_are_refused() {
        let mut d = Dispatcher::new(2);
        let mut runs = 0;
        d.register("blink", move |args| {
            runs += 1;
            Ok(json!({"times": args["times"], "runs": runs}))
        });
        d.register("fail", |_| Err("sensor offline".into()));

        let (a, o) = d.dispatch("c1", "blink", &json!({"times": 3}));
        assert_eq!((a.ok, o), (true, Outcome::Ran));
        assert_eq!(a.output, json!({"times": 3, "runs": 1}));
        let (again, o) = d.dispatch("c1", "blink", &json!({"times": 3}));
        assert_eq!((again, o), (a, Outcome::Replayed));

        let (a, o) = d.dispatch("c2", "dance", &Value::Null);
        assert_eq!((a.ok, o), (false, Outcome::Unknown));
        assert_eq!(a.output, json!({"error": "unknown command: dance"}));

        let (a, _) = d.dispatch("c3", "fail", &Value::Null);
        assert_eq!(a.output, json!({"error": "sensor offline"}));

        // Only the last two answers are remembered: c1 runs again.
        let (a, o) = d.dispatch("c1", "blink", &json!({"times": 1}));
        assert_eq!(o, Outcome::Ran);
        assert_eq!(a.output["runs"], 2);
    }
}
