import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from "typeorm";

/** One prayer request shared with the community. */
@Entity({ name: "prayers" })
export class Prayer {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "varchar", length: 80 })
  author: string;

  @Column({ type: "text" })
  body: string;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt: Date;
}
