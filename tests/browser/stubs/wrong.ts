// Wrong calls against the chat example's generated stubs: `tsc` must reject each marked line.
import { Api } from "../../../examples/chat/web/api.js";

export async function wrong(api: Api): Promise<void> {
  await api.room.message({ name: "alice" }); // WRONG: content is missing
  await api.room.message({ name: 7, content: "hi" }); // WRONG: name is a string
  api.on("onMessage", (m) => m.text); // WRONG: a UserMessage has no text
  await api.room.leave(); // WRONG: there is no room.leave
  api.on("onNothing", () => {}); // WRONG: no such push
  const n: string = (await api.room.join()).code; // WRONG: code is a number
  void n;
}
